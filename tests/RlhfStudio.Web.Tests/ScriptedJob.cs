using System.Text.Json;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Tests;

/// <summary>A training job for host tests: "trains" for spec.Training.MaxSteps steps, reporting
/// train/loss = 1/step and a sample row every 5 steps, saving complete checkpoints (folder + manifest,
/// as the engine contract prescribes) every Checkpoints.SaveSteps steps and when cancelled, and resuming
/// from a checkpoint's step. Its speed is set per test.</summary>
public sealed class ScriptedJob(RunSpec spec, TimeSpan stepTime) : ITrainingJob
{
    public RunOutcome Run(RunContext context)
    {
        long start = 0;
        if (context.ResumeFrom is not null)
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(context.ResumeFrom, CheckpointFolder.ManifestFile)));
            start = doc.RootElement.GetProperty("step").GetInt64();
        }
        context.Reporter.Event(RunEvent.Info($"model={spec.Model}"));
        long total = spec.Training.MaxSteps;
        string? last = null;
        var began = DateTime.UtcNow;
        for (long step = start + 1; step <= total; step++)
        {
            if (context.Cancellation.IsCancellationRequested)
                return RunOutcome.Cancelled(Save(context, step - 1));
            Thread.Sleep(stepTime);
            context.Reporter.Metrics(step, new Dictionary<string, double> { [MetricNames.TrainLoss] = 1.0 / step, [MetricNames.LearningRate] = 1e-4 });
            if (step % 5 == 0)
                context.Reporter.Samples(step, [new SampleRow(0, "What is 2 + 2?", $"answer at {step}", Score: step)]);
            context.Reporter.Progress(new RunProgress(step, total, DateTime.UtcNow - began, null));
            if (spec.Checkpoints.SaveSteps > 0 && step % spec.Checkpoints.SaveSteps == 0) last = Save(context, step);
        }
        var final = Path.Combine(context.OutputDirectory, "final");
        Directory.CreateDirectory(final);
        return RunOutcome.Completed(final, last);
    }

    private static string Save(RunContext context, long step)
    {
        var path = Path.Combine(context.OutputDirectory, CheckpointFolder.NameFor(step));
        Directory.CreateDirectory(path);
        File.WriteAllText(Path.Combine(path, CheckpointFolder.ManifestFile), JsonSerializer.Serialize(new { step }));
        context.Reporter.Checkpoint(new CheckpointReport(step, path, new Dictionary<string, double> { ["eval/loss"] = 1.0 / Math.Max(1, step) }));
        return path;
    }
}

public sealed class ScriptedJobFactory(TimeSpan stepTime) : JobFactory
{
    public TimeSpan StepTime { get; set; } = stepTime;
    public override ITrainingJob Create(RunSpec spec)
    {
        spec.EnsureValid();
        return new ScriptedJob(spec, StepTime);
    }
}
