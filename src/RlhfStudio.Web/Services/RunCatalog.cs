using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Services;

/// <summary>Creates run records from specs: the one way the form, the API and pipelines queue work.
/// Checks the spec, that its paths lie under the allowed roots and that referenced runs exist.</summary>
public sealed class RunCatalog(IDbContextFactory<StudioDbContext> dbFactory, StudioEvents events, RunService runs, IOptions<StudioOptions> options)
{
    /// <summary>Validates the spec and stores it as a queued run at the end of the queue.</summary>
    public async Task<RunRecord> QueueAsync(RunSpec spec, CancellationToken cancel = default)
    {
        var created = await QueuePipelineAsync([spec], cancel);
        return created[0];
    }

    /// <summary>Queues a chain of runs; a later stage refers to an earlier one's output with
    /// <c>ModelRef.Stage</c> / <c>RewardSource.Stage</c> and starts only after the stage before it completed.</summary>
    public async Task<IReadOnlyList<RunRecord>> QueuePipelineAsync(IReadOnlyList<RunSpec> stages, CancellationToken cancel = default)
    {
        if (stages.Count == 0) throw new RunSpecException([new SpecError("stages", "a pipeline needs at least one stage")]);
        for (int i = 0; i < stages.Count; i++)
        {
            var errors = stages[i].Validate().ToList();
            errors.AddRange(CheckPaths(stages[i]));
            errors.AddRange(StageRefs(stages[i]).Where(s => s >= i).Select(s => new SpecError("stage", $"stage {i} refers to stage {s}, which does not come before it")));
            if (errors.Count > 0)
                throw new RunSpecException(stages.Count == 1 ? errors : errors.Select(e => e with { Field = $"stages[{i}].{e.Field}" }).ToList());
        }

        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        foreach (var id in stages.SelectMany(RunRefs).Distinct())
            if (!await db.Runs.AnyAsync(r => r.Id == id, cancel))
                throw new RunSpecException([new SpecError("runId", $"run #{id} does not exist")]);

        await using var tx = await db.Database.BeginTransactionAsync(cancel);
        double position = (await db.Runs.Where(r => r.Status == RunStatus.Queued).MaxAsync(r => (double?)r.QueuePosition, cancel) ?? 0) + 1;
        var created = new List<RunRecord>();
        long? pipelineId = null;
        for (int i = 0; i < stages.Count; i++)
        {
            var spec = ReplaceStages(stages[i], created);
            var run = new RunRecord
            {
                Name = string.IsNullOrWhiteSpace(spec.Name) ? $"{spec.Method.ToString().ToLowerInvariant()} {spec.Model}" : spec.Name,
                Method = spec.Method.ToString().ToLowerInvariant(),
                Status = RunStatus.Queued,
                SpecJson = spec.ToJson(),
                ModelName = spec.Model.ToString(),
                DatasetName = spec.Dataset.ToString(),
                CreatedAt = DateTimeOffset.UtcNow,
                QueuePosition = position++,
                PipelineStage = i,
                DependsOnRunId = i > 0 ? created[^1].Id : null,
            };
            db.Runs.Add(run);
            await db.SaveChangesAsync(cancel);
            if (stages.Count > 1)
            {
                pipelineId ??= run.Id;
                run.PipelineId = pipelineId;
                await db.SaveChangesAsync(cancel);
            }
            created.Add(run);
        }
        await tx.CommitAsync(cancel);
        foreach (var run in created) events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
        runs.Wake();
        return created;
    }

    private IEnumerable<SpecError> CheckPaths(RunSpec spec)
    {
        var o = options.Value;
        var checks = new List<(string Field, string? Path, IReadOnlyList<string> Roots, string What)>
        {
            ("model.path", spec.Model.Path, o.ModelRoots, "model"),
            ("dataset.path", spec.Dataset.Path, o.AllowedDatasetRoots, "dataset"),
        };
        switch (spec)
        {
            case PpoSpec p:
                checks.Add(("reference.path", p.Reference?.Path, o.ModelRoots, "model"));
                checks.Add(("valueModel.path", p.ValueModel?.Path, o.ModelRoots, "model"));
                checks.Add(("reward.modelPath", p.Reward.ModelPath, o.ModelRoots, "model"));
                break;
            case RlooSpec r:
                checks.Add(("reference.path", r.Reference?.Path, o.ModelRoots, "model"));
                checks.Add(("reward.modelPath", r.Reward.ModelPath, o.ModelRoots, "model"));
                break;
            case DpoSpec d:
                checks.Add(("reference.path", d.Reference?.Path, o.ModelRoots, "model"));
                break;
        }
        foreach (var (field, path, roots, what) in checks)
        {
            if (path is null) continue;
            string? error = null;
            try { PathGuard.EnsureUnder(path, roots, what); }
            catch (Exception ex) when (ex is UnauthorizedAccessException or ArgumentException or IOException) { error = ex.Message; }
            if (error is not null) yield return new SpecError(field, error);
        }
    }

    private static IEnumerable<int> StageRefs(RunSpec spec)
    {
        IEnumerable<int?> refs = spec switch
        {
            PpoSpec p => [p.Model.Stage, p.Reference?.Stage, p.ValueModel?.Stage, p.Reward.Stage],
            RlooSpec r => [r.Model.Stage, r.Reference?.Stage, r.Reward.Stage],
            DpoSpec d => [d.Model.Stage, d.Reference?.Stage],
            _ => [spec.Model.Stage],
        };
        return refs.Where(s => s is not null).Select(s => s!.Value);
    }

    private static IEnumerable<long> RunRefs(RunSpec spec)
    {
        IEnumerable<long?> refs = spec switch
        {
            PpoSpec p => [p.Model.RunId, p.Reference?.RunId, p.ValueModel?.RunId, p.Reward.RunId],
            RlooSpec r => [r.Model.RunId, r.Reference?.RunId, r.Reward.RunId],
            DpoSpec d => [d.Model.RunId, d.Reference?.RunId],
            _ => [spec.Model.RunId],
        };
        return refs.Where(s => s is not null).Select(s => s!.Value);
    }

    private static RunSpec ReplaceStages(RunSpec spec, List<RunRecord> created)
    {
        ModelRef? M(ModelRef? m) => m?.Stage is int s ? ModelRef.FromRun(created[s].Id) : m;
        RewardSource R(RewardSource r) => r.Stage is int s ? new RewardSource { RunId = created[s].Id } : r;
        spec = spec with { Model = M(spec.Model)! };
        return spec switch
        {
            PpoSpec p => p with { Reference = M(p.Reference), ValueModel = M(p.ValueModel), Reward = R(p.Reward) },
            RlooSpec r => r with { Reference = M(r.Reference), Reward = R(r.Reward) },
            DpoSpec d => d with { Reference = M(d.Reference) },
            _ => spec,
        };
    }
}
