using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Web.Services;

/// <summary>Creates run records from specs, the one way the form, the API and pipelines queue work.</summary>
public sealed class RunCatalog(IDbContextFactory<StudioDbContext> dbFactory, StudioEvents events)
{
    /// <summary>Validates the spec and stores it as a queued run at the end of the queue.</summary>
    public async Task<RunRecord> QueueAsync(RunSpec spec, CancellationToken cancel = default)
    {
        spec.EnsureValid();
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        double last = await db.Runs.Where(r => r.Status == RunStatus.Queued).MaxAsync(r => (double?)r.QueuePosition, cancel) ?? 0;
        var run = new RunRecord
        {
            Name = string.IsNullOrWhiteSpace(spec.Name) ? $"{spec.Method.ToString().ToLowerInvariant()} {spec.Model}" : spec.Name,
            Method = spec.Method.ToString().ToLowerInvariant(),
            Status = RunStatus.Queued,
            SpecJson = spec.ToJson(),
            ModelName = spec.Model.ToString(),
            DatasetName = spec.Dataset.ToString(),
            CreatedAt = DateTimeOffset.UtcNow,
            QueuePosition = last + 1,
        };
        db.Runs.Add(run);
        await db.SaveChangesAsync(cancel);
        events.Publish(new RunListChanged(run.Id, run.Status.ToString()));
        return run;
    }
}
