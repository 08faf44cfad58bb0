using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Api;

/// <summary>Runs: create (queue), list, get.</summary>
public static class RunsApi
{
    public static IEndpointRouteBuilder MapRunsApi(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api/runs").WithTags("Runs");
        api.MapGet("/", ListRuns).WithName("ListRuns").WithSummary("All runs, newest first.");
        api.MapGet("/{id:long}", GetRun).WithName("GetRun").WithSummary("One run with its specification.");
        api.MapPost("/", CreateRun).WithName("CreateRun")
            .WithSummary("Queues a run from a run specification (JSON with a \"method\" field); invalid fields are named in the 400 answer.");
        return app;
    }

    public sealed record RunSummary(long Id, string Name, string Method, string Status, string Model, string Dataset,
        DateTimeOffset CreatedAt, DateTimeOffset? StartedAt, DateTimeOffset? EndedAt, long Step, long TotalSteps, double? EtaSeconds, string? Error)
    {
        public static RunSummary From(RunRecord r) => new(r.Id, r.Name, r.Method, r.Status.ToString(), r.ModelName, r.DatasetName,
            r.CreatedAt, r.StartedAt, r.EndedAt, r.Step, r.TotalSteps, r.EtaSeconds, r.Error);
    }

    public sealed record RunDetail(RunSummary Run, System.Text.Json.JsonElement Spec);

    private static async Task<Ok<List<RunSummary>>> ListRuns(StudioDbContext db, CancellationToken cancel)
    {
        var runs = await db.Runs.AsNoTracking().OrderByDescending(r => r.Id).ToListAsync(cancel);
        return TypedResults.Ok(runs.Select(RunSummary.From).ToList());
    }

    private static async Task<Results<Ok<RunDetail>, NotFound>> GetRun(long id, StudioDbContext db, CancellationToken cancel)
    {
        var run = await db.Runs.AsNoTracking().FirstOrDefaultAsync(r => r.Id == id, cancel);
        if (run is null) return TypedResults.NotFound();
        using var doc = System.Text.Json.JsonDocument.Parse(run.SpecJson);
        return TypedResults.Ok(new RunDetail(RunSummary.From(run), doc.RootElement.Clone()));
    }

    private static async Task<Results<Created<RunSummary>, ValidationProblem>> CreateRun(HttpRequest request, RunCatalog catalog, CancellationToken cancel)
    {
        using var reader = new StreamReader(request.Body);
        var json = await reader.ReadToEndAsync(cancel);
        RunSpec spec;
        try
        {
            spec = RunSpec.FromJson(json);
        }
        catch (RunSpecException ex)
        {
            return TypedResults.ValidationProblem(ex.Errors.GroupBy(e => e.Field).ToDictionary(g => g.Key, g => g.Select(e => e.Message).ToArray()),
                title: "The run specification is invalid.");
        }
        var run = await catalog.QueueAsync(spec, cancel);
        return TypedResults.Created($"/api/runs/{run.Id}", RunSummary.From(run));
    }
}
