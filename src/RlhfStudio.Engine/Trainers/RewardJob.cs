// The reward-modelling job: dataset check -> score model setup -> tokenise pairs once -> TrainingLoop -> final/ folder
// (LlamaForSequenceClassification, num_labels = 1, merged when LoRA).
using System.Diagnostics;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers;

public sealed class RewardJob : ITrainingJob
{
    public RunOutcome Run(RunContext context) => JobFailures.Guard(() =>
    {
        var spec = context.Spec as RewardSpec ?? throw new ArgumentException($"a reward job needs a reward spec, got {context.Spec.Method}");
        var reporter = context.Reporter;
        var dataset = Dataset.Open(spec.Dataset, TrainingMethod.Reward, spec.Seed);
        reporter.Event(RunEvent.Info($"dataset {dataset.Name}: {DatasetFormats.Describe(dataset.Format)} data; evaluation on {dataset.EvalDescription}"));
        using var setup = ModelSetup.ForScoreModel(spec, reporter);

        var clock = Stopwatch.StartNew();
        long rows = dataset.CountRows(DatasetPart.Train);
        reporter.Progress(new RunProgress(0, rows, clock.Elapsed, null, "tokenize"));
        var (train, stats) = RewardData.TokenizeAll(dataset.Examples(DatasetPart.Train), setup.Tokenizer, setup.Template, spec.MaxLength,
            done => reporter.Progress(new RunProgress(Math.Min(done, rows), rows, clock.Elapsed, null, "tokenize")));
        var (eval, evalStats) = RewardData.TokenizeAll(dataset.Examples(DatasetPart.Eval), setup.Tokenizer, setup.Template, spec.MaxLength);
        reporter.Event(RunEvent.Info($"tokenised {stats.Pairs:N0} training and {evalStats.Pairs:N0} evaluation pairs in {clock.Elapsed.TotalSeconds:F1} s"));
        if (stats.Truncated + evalStats.Truncated > 0)
            reporter.Event(RunEvent.Warn("sequences-truncated", $"{stats.Truncated:N0} training and {evalStats.Truncated:N0} evaluation pairs " +
                $"had a side longer than maxLength {spec.MaxLength}, cut at the end"));
        if (stats.DroppedIdentical + evalStats.DroppedIdentical > 0)
            reporter.Event(RunEvent.Warn("pairs-dropped", $"{stats.DroppedIdentical:N0} training and {evalStats.DroppedIdentical:N0} evaluation pairs " +
                $"were dropped: chosen and rejected were identical within maxLength {spec.MaxLength}"));
        if (spec.UseMargin && !train.Any(p => p.Pair.Margin is not null))
            reporter.Event(RunEvent.Warn("no-margin", "useMargin is on but the data has no margins; the loss has none"));

        var task = new RewardTask(spec, setup, train.Select(p => p.Pair).ToList(), eval.Select(p => p.Pair).ToList(),
            eval.Take(RewardTask.SamplePairs).ToList(), reporter);
        var outcome = new TrainingLoop<RewardBatch>(context, task).Run();
        if (outcome.State != RunEndState.Completed) return outcome;
        var final = setup.SaveFinal(Path.Combine(context.OutputDirectory, SftJob.FinalFolderName), TrainingMethod.Reward);
        reporter.Event(RunEvent.Info($"final reward model written to {final}"));
        return RunOutcome.Completed(final, outcome.LastCheckpoint);
    });
}
