using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Api;

/// <summary>Runs: queue, list, inspect, control, and read their records.</summary>
public static class RunsApi
{
    public static IEndpointRouteBuilder MapRunsApi(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/runs").WithTags("Runs");
        api.MapGet("/", ListRuns).WithName("ListRuns").WithSummary("All runs, newest first (optionally filtered by status or method).");
        api.MapPost("/", CreateRun).WithName("CreateRun")
            .WithSummary("Queues a run from a run specification (JSON with a \"method\" field); invalid fields are named in the 400 answer.");
        api.MapPost("/pipeline", CreatePipeline).WithName("CreatePipeline")
            .WithSummary("Queues a chain of runs ({\"stages\": [spec, ...]}); later stages refer to earlier outputs with {\"stage\": i}.");
        api.MapGet("/{id:long}", GetRun).WithName("GetRun").WithSummary("One run with its specification.");
        api.MapPost("/{id:long}/cancel", Cancel).WithName("CancelRun").WithSummary("Cancels a queued run or stops a running one after its current step.");
        api.MapPost("/{id:long}/pause", Pause).WithName("PauseRun").WithSummary("Stops a running run after its current step, keeping a checkpoint.");
        api.MapPost("/{id:long}/resume", Resume).WithName("ResumeRun").WithSummary("Queues a paused, cancelled, failed or interrupted run to continue from its newest checkpoint.");
        api.MapPost("/{id:long}/move", Move).WithName("MoveRun").WithSummary("Moves a queued run to a position in the queue (0 = next).");
        api.MapDelete("/{id:long}", Delete).WithName("DeleteRun").WithSummary("Deletes a run and its records; ?files=true also deletes its folder.");
        api.MapGet("/{id:long}/metrics", Metrics).WithName("GetRunMetrics")
            .WithSummary("Metric series (?names=a,b&from=&to=&maxPoints=), downsampled server-side keeping each bucket's extremes.");
        api.MapGet("/{id:long}/metrics.csv", ExportCsv).WithName("ExportRunMetricsCsv").WithSummary("Every metric point of the run as CSV (step,name,value,time).");
        api.MapGet("/{id:long}/metrics.json", ExportJson).WithName("ExportRunMetricsJson").WithSummary("Every metric point of the run as JSON, by series.");
        api.MapGet("/{id:long}/samples", Samples).WithName("GetRunSamples").WithSummary("Generated samples (?step=&table=).");
        api.MapGet("/{id:long}/checkpoints", Checkpoints).WithName("GetRunCheckpoints").WithSummary("Checkpoints with their evaluation metrics.");
        api.MapGet("/{id:long}/events", Events).WithName("GetRunEvents").WithSummary("Log lines and warnings.");
        return app;
    }

    public sealed record RunSummary(long Id, string Name, string Method, string Status, string Model, string Dataset,
        DateTimeOffset CreatedAt, DateTimeOffset? StartedAt, DateTimeOffset? EndedAt, long Step, long TotalSteps, double? EtaSeconds,
        string? Error, long? PipelineId, int PipelineStage, long? DependsOnRunId, string? FinalModelPath)
    {
        public static RunSummary From(RunRecord r) => new(r.Id, r.Name, r.Method, r.Status.ToString(), r.ModelName, r.DatasetName,
            r.CreatedAt, r.StartedAt, r.EndedAt, r.Step, r.TotalSteps, r.EtaSeconds, r.Error, r.PipelineId, r.PipelineStage,
            r.DependsOnRunId, r.FinalModelPath);
    }

    public sealed record RunDetail(RunSummary Run, JsonElement Spec);

    private static async Task<Ok<List<RunSummary>>> ListRuns(StudioDbContext db, string? status, string? method, CancellationToken cancel)
    {
        var query = db.Runs.AsNoTracking();
        if (Enum.TryParse<RunStatus>(status, ignoreCase: true, out var s)) query = query.Where(r => r.Status == s);
        if (!string.IsNullOrEmpty(method)) query = query.Where(r => r.Method == method.ToLowerInvariant());
        var runs = await query.OrderByDescending(r => r.Id).ToListAsync(cancel);
        return TypedResults.Ok(runs.Select(RunSummary.From).ToList());
    }

    private static async Task<Results<Ok<RunDetail>, NotFound>> GetRun(long id, StudioDbContext db, CancellationToken cancel)
    {
        var run = await db.Runs.AsNoTracking().FirstOrDefaultAsync(r => r.Id == id, cancel);
        if (run is null) return TypedResults.NotFound();
        using var doc = JsonDocument.Parse(run.SpecJson);
        return TypedResults.Ok(new RunDetail(RunSummary.From(run), doc.RootElement.Clone()));
    }

    private static ValidationProblem Invalid(IEnumerable<SpecError> errors, string title) =>
        TypedResults.ValidationProblem(errors.GroupBy(e => e.Field).ToDictionary(g => g.Key, g => g.Select(e => e.Message).ToArray()), title: title);

    private static async Task<Results<Created<RunSummary>, ValidationProblem>> CreateRun(HttpRequest request, RunCatalog catalog, CancellationToken cancel)
    {
        using var reader = new StreamReader(request.Body);
        var json = await reader.ReadToEndAsync(cancel);
        try
        {
            var run = await catalog.QueueAsync(RunSpec.FromJson(json), cancel);
            return TypedResults.Created($"/api/runs/{run.Id}", RunSummary.From(run));
        }
        catch (RunSpecException ex)
        {
            return Invalid(ex.Errors, "The run specification is invalid.");
        }
    }

    private static async Task<Results<Created<List<RunSummary>>, ValidationProblem>> CreatePipeline(HttpRequest request, RunCatalog catalog, CancellationToken cancel)
    {
        using var reader = new StreamReader(request.Body);
        var json = await reader.ReadToEndAsync(cancel);
        try
        {
            var stages = new List<RunSpec>();
            using (var doc = JsonDocument.Parse(json))
            {
                if (!doc.RootElement.TryGetProperty("stages", out var list) || list.ValueKind != JsonValueKind.Array)
                    return Invalid([new SpecError("stages", "expected {\"stages\": [spec, ...]}")], "The pipeline is invalid.");
                int i = 0;
                foreach (var stage in list.EnumerateArray())
                {
                    try { stages.Add(RunSpec.FromJson(stage.GetRawText())); }
                    catch (RunSpecException ex) { throw new RunSpecException(ex.Errors.Select(e => e with { Field = $"stages[{i}].{e.Field}" }).ToList()); }
                    i++;
                }
            }
            var runs = await catalog.QueuePipelineAsync(stages, cancel);
            return TypedResults.Created($"/api/runs/{runs[0].Id}", runs.Select(RunSummary.From).ToList());
        }
        catch (JsonException ex)
        {
            return Invalid([new SpecError("$", ex.Message)], "The pipeline is not valid JSON.");
        }
        catch (RunSpecException ex)
        {
            return Invalid(ex.Errors, "The pipeline is invalid.");
        }
    }

    private static async Task<Results<Accepted, Conflict<string>>> Cancel(long id, RunService runs) =>
        await runs.CancelAsync(id) ? TypedResults.Accepted($"/api/runs/{id}") : TypedResults.Conflict("only a queued, paused or running run can be cancelled");

    private static Results<Accepted, Conflict<string>> Pause(long id, RunService runs) =>
        runs.Pause(id) ? TypedResults.Accepted($"/api/runs/{id}") : TypedResults.Conflict("only a running run can be paused");

    private static async Task<Results<Accepted, Conflict<string>>> Resume(long id, RunService runs) =>
        await runs.ResumeAsync(id) ? TypedResults.Accepted($"/api/runs/{id}") : TypedResults.Conflict("only a paused, cancelled, failed or interrupted run can be resumed");

    private static async Task<Results<NoContent, Conflict<string>>> Move(long id, int position, RunService runs) =>
        await runs.MoveAsync(id, position) ? TypedResults.NoContent() : TypedResults.Conflict("only a queued run can be moved");

    private static async Task<Results<NoContent, NotFound>> Delete(long id, RunService runs, bool files = false) =>
        await runs.DeleteAsync(id, files) ? TypedResults.NoContent() : TypedResults.NotFound();

    private static async Task<Results<Ok<Dictionary<string, IReadOnlyList<MetricPointDto>>>, NotFound, BadRequest<string>>> Metrics(
        long id, RunQueries queries, string? names, long? from, long? to, int? maxPoints, CancellationToken cancel)
    {
        if (maxPoints is < 4 or > 1_000_000) return TypedResults.BadRequest("maxPoints must be between 4 and 1000000");
        if (await queries.GetRunAsync(id, cancel) is null) return TypedResults.NotFound();
        var list = string.IsNullOrWhiteSpace(names) ? null : names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return TypedResults.Ok(await queries.MetricsAsync(id, list, from ?? long.MinValue, to ?? long.MaxValue, maxPoints ?? RunQueries.DefaultMaxPoints, cancel));
    }

    private static async Task<Results<FileContentHttpResult, NotFound>> ExportCsv(long id, RunQueries queries, MetricStore store, CancellationToken cancel)
    {
        if (await queries.GetRunAsync(id, cancel) is null) return TypedResults.NotFound();
        var csv = new StringBuilder("step,name,value,time_ms\n");
        foreach (var name in await store.SeriesNamesAsync(id, cancel))
            foreach (var p in await store.ReadAsync(id, name, cancel: cancel))
                csv.Append(p.Step).Append(',').Append(CsvField(name)).Append(',')
                   .Append(p.Value.ToString("R", CultureInfo.InvariantCulture)).Append(',').Append(p.TimeMs).Append('\n');
        return TypedResults.File(Encoding.UTF8.GetBytes(csv.ToString()), "text/csv", $"run-{id}-metrics.csv");
    }

    private static async Task<Results<Ok<Dictionary<string, IReadOnlyList<MetricValue>>>, NotFound>> ExportJson(long id, RunQueries queries, MetricStore store, CancellationToken cancel)
    {
        if (await queries.GetRunAsync(id, cancel) is null) return TypedResults.NotFound();
        var all = new Dictionary<string, IReadOnlyList<MetricValue>>();
        foreach (var name in await store.SeriesNamesAsync(id, cancel)) all[name] = await store.ReadAsync(id, name, cancel: cancel);
        return TypedResults.Ok(all);
    }

    private static async Task<Results<Ok<List<SampleDto>>, NotFound>> Samples(long id, RunQueries queries, long? step, string? table, CancellationToken cancel) =>
        await queries.GetRunAsync(id, cancel) is null ? TypedResults.NotFound() : TypedResults.Ok(await queries.SamplesAsync(id, step, table, cancel));

    private static async Task<Results<Ok<List<CheckpointDto>>, NotFound>> Checkpoints(long id, RunQueries queries, CancellationToken cancel) =>
        await queries.GetRunAsync(id, cancel) is null ? TypedResults.NotFound() : TypedResults.Ok(await queries.CheckpointsAsync(id, cancel));

    private static async Task<Results<Ok<List<RunEventDto>>, NotFound>> Events(long id, RunQueries queries, CancellationToken cancel) =>
        await queries.GetRunAsync(id, cancel) is null ? TypedResults.NotFound() : TypedResults.Ok(await queries.EventsAsync(id, cancel: cancel));

    private static string CsvField(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
