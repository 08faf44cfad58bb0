using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using MudBlazor.Services;
using RlhfStudio.Data;
using RlhfStudio.Web.Api;
using RlhfStudio.Web.Components;
using RlhfStudio.Web.Hubs;
using RlhfStudio.Web.Services;
using Scalar.AspNetCore;

namespace RlhfStudio.Web;

/// <summary>All of the studio's registration and endpoint mapping, so that Program.cs stays a few lines.</summary>
public static class StudioServices
{
    public static WebApplicationBuilder AddStudioServices(this WebApplicationBuilder builder)
    {
        // Serve MudBlazor's and our static assets straight from the build output in every environment
        // (only Development does so by default); the studio runs as Production so errors never show stack traces.
        builder.WebHost.UseStaticWebAssets();
        var options = new StudioOptions();
        builder.Configuration.GetSection(StudioOptions.Section).Bind(options);
        options.Resolve(builder.Environment.ContentRootPath);
        builder.Services.AddSingleton(Options.Create(options));

        builder.Services.AddDbContextFactory<StudioDbContext>(o => StudioDatabase.Configure(o, options.DataPath));
        builder.Services.AddSingleton(_ => new MetricStore(StudioDatabase.ConnectionString(options.DataPath)));
        builder.Services.AddSingleton(_ => new RunJournal(StudioDatabase.ConnectionString(options.DataPath)));

        builder.Services.AddSingleton<StudioEvents>();
        builder.Services.AddSingleton<MachineBenchmarkService>();
        builder.Services.AddSingleton<RunCatalog>();
        builder.Services.AddSingleton<AccessGuard>();
        builder.Services.AddSingleton<DatasetLibrary>();
        builder.Services.AddSingleton<ModelLibrary>();
        builder.Services.AddSingleton<RunQueries>();
        builder.Services.AddSingleton<ModelSources>();
        builder.Services.AddSingleton<PlaygroundService>();
        builder.Services.AddSingleton<HeadToHead>();
        builder.Services.AddSingleton<JobFactory>();
        builder.Services.AddSingleton<RecordWriter>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RecordWriter>());
        builder.Services.AddSingleton<RunService>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RunService>());
        // A running job needs up to one optimisation step to stop and save its checkpoint.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(90));

        builder.Services.AddSignalR();
        builder.Services.AddRazorComponents().AddInteractiveServerComponents();
        builder.Services.AddMudServices();
        builder.Services.AddOpenApi();
        builder.Services.AddProblemDetails();
        builder.Services.AddHealthChecks().AddCheck<DatabaseHealthCheck>("database");
        return builder;
    }

    /// <summary>Creates and migrates the database before the studio accepts requests.</summary>
    public static async Task InitializeStudioAsync(this WebApplication app)
    {
        var options = app.Services.GetRequiredService<IOptions<StudioOptions>>().Value;
        await StudioDatabase.InitializeAsync(options.DataPath);
        Directory.CreateDirectory(options.RunsPath);
        app.Logger.LogInformation("RlhfStudio data folder: {DataPath}", options.DataPath);
    }

    public static WebApplication MapStudio(this WebApplication app)
    {
        app.UseExceptionHandler(); // problem details without stack traces, in every environment
        app.UseStatusCodePages();
        app.UseMiddleware<AccessGuardMiddleware>();
        app.UseAntiforgery();
        app.MapStaticAssets();

        app.MapOpenApi();
        app.MapScalarApiReference("/api/docs");
        app.MapHealthChecks("/healthz");
        app.MapLogin();
        app.MapSystemApi();
        app.MapRunsApi();
        app.MapLibraryApi();
        app.MapHub<RunsHub>(RunsHub.Path);
        app.MapRazorComponents<App>().AddInteractiveServerRenderMode();
        return app;
    }

    private sealed class DatabaseHealthCheck(IDbContextFactory<StudioDbContext> dbFactory) : IHealthCheck
    {
        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancel = default)
        {
            await using var db = await dbFactory.CreateDbContextAsync(cancel);
            return await db.Database.CanConnectAsync(cancel)
                ? HealthCheckResult.Healthy("database reachable")
                : HealthCheckResult.Unhealthy("database not reachable");
        }
    }
}
