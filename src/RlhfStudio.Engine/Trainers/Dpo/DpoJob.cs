// The DPO job: dataset check -> policy setup -> reference (see DpoReference) -> tokenise pairs once -> the reference's
// sample completions -> [precompute reference log-probabilities, or read them from the resumed checkpoint, then free a
// separate reference] -> TrainingLoop -> final/ folder (HF layout, merged when LoRA, adapter in final/adapter/).
using System.Diagnostics;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers.Dpo;

public sealed class DpoJob : ITrainingJob
{
    /// <summary>Distinct evaluation prompts in the sample table.</summary>
    public const int SamplePrompts = 8;

    public RunOutcome Run(RunContext context) => JobFailures.Guard(() =>
    {
        var spec = context.Spec as DpoSpec ?? throw new ArgumentException($"a DPO job needs a DPO spec, got {context.Spec.Method}");
        var reporter = context.Reporter;
        var dataset = Dataset.Open(spec.Dataset, TrainingMethod.Dpo, spec.Seed);
        reporter.Event(RunEvent.Info($"dataset {dataset.Name}: {DatasetFormats.Describe(dataset.Format)} data; evaluation on {dataset.EvalDescription}"));
        using var setup = ModelSetup.ForCausalLm(spec, reporter);
        using var reference = DpoReference.Create(spec, setup);
        reporter.Event(RunEvent.Info($"reference model: {reference.Description}; beta {spec.Beta}" +
            (spec.LabelSmoothing > 0 ? $", label smoothing {spec.LabelSmoothing} (cDPO)" : "") +
            (spec.RpoAlpha is { } alpha ? $", rpo_alpha {alpha} (NLL of the chosen answers added)" : "")));

        var (train, eval) = Tokenize(spec, dataset, setup, reporter);
        var samples = SampleTable(spec, eval.Select(p => p.Example), setup, reference, context.Cancellation);

        ReferenceLogProbs? precomputed = null;
        if (spec.PrecomputeReferenceLogProbs)
        {
            var trainPairs = train.Select(p => p.Pair).ToList();
            var evalPairs = eval.Select(p => p.Pair).ToList();
            var fingerprint = ReferenceLogProbs.FingerprintOf(trainPairs, evalPairs, reference.Description + "|" + (spec.Reference ?? spec.Model));
            if (context.ResumeFrom is { } resume)
            {
                precomputed = ReferenceLogProbs.TryLoad(resume, fingerprint, trainPairs.Count, evalPairs.Count, out var why);
                reporter.Event(RunEvent.Info(precomputed is not null
                    ? $"reference log-probabilities read from {Path.GetFileName(resume)}"
                    : $"reference log-probabilities must be recomputed: {why}"));
            }
            if (precomputed is null)
            {
                var clock = Stopwatch.StartNew();
                long total = trainPairs.Count + evalPairs.Count;
                // TRL precomputes every pair; a short run over a large set would spend most of its time here.
                long used = spec.Training.MaxSteps > 0 ? (long)spec.Training.MaxSteps * spec.Training.BatchSize * spec.Training.GradientAccumulation : long.MaxValue;
                if (used < trainPairs.Count / 2)
                    reporter.Event(RunEvent.Warn("precompute-unused", $"precomputing the reference log-probabilities of all {trainPairs.Count:N0} training pairs, " +
                        $"though {spec.Training.MaxSteps} steps use at most {used:N0} of them; with precomputeReferenceLogProbs false the reference runs " +
                        "alongside each batch instead (one forward pass without a graph per step)"));
                try
                {
                    precomputed = ReferenceLogProbs.Compute(reference, trainPairs, evalPairs, spec.Training.BatchSize, setup.Tokenizer.PadId ?? setup.Tokenizer.EosId ?? 0, setup.Device,
                        fingerprint, (done, all) => reporter.Progress(new RunProgress(done, all, clock.Elapsed, null, "reference")), context.Cancellation);
                }
                catch (OperationCanceledException) when (context.Cancellation.IsCancellationRequested)
                {
                    // No training step has run: there is nothing new to checkpoint.
                    return RunOutcome.Cancelled(context.ResumeFrom);
                }
                reporter.Event(RunEvent.Info($"precomputed the reference log-probabilities of {total:N0} pairs in {clock.Elapsed.TotalSeconds:F1} s"));
            }
            // Nothing needs the separate reference any more (its samples are made): free its weights.
            if (reference.Copy is not null) reference.Release();
        }

        var questions = ArithmeticEvaluation.IsArithmetic(spec.Dataset)
            ? ArithmeticEvaluation.HeldOutQuestions(SftTask.ExactMatchQuestions, spec.Seed)
            : [];
        var task = new DpoTask(spec, setup, reference, train.Select(p => p.Pair).ToList(), eval.Select(p => p.Pair).ToList(), precomputed, samples,
            questions, reporter, context.Cancellation);
        var outcome = new TrainingLoop<DpoBatch>(context, task).Run();
        if (outcome.State != RunEndState.Completed) return outcome;
        var final = setup.SaveFinal(Path.Combine(context.OutputDirectory, SftJob.FinalFolderName), TrainingMethod.Dpo);
        reporter.Event(RunEvent.Info($"final model written to {final}"));
        return RunOutcome.Completed(final, outcome.LastCheckpoint);
    });

    /// <summary>Training and evaluation pairs, tokenised and truncated (see DpoData); problems reported as warnings.</summary>
    public static (List<(PreferenceExample Example, DpoPair Pair)> Train, List<(PreferenceExample Example, DpoPair Pair)> Eval) Tokenize(
        DpoSpec spec, Dataset dataset, TrainableModel<Models.CausalLanguageModel> setup, IRunReporter reporter)
    {
        var clock = Stopwatch.StartNew();
        long rows = dataset.CountRows(DatasetPart.Train);
        reporter.Progress(new RunProgress(0, rows, clock.Elapsed, null, "tokenize"));
        var (train, stats) = DpoData.TokenizeAll(dataset.Examples(DatasetPart.Train), setup.Tokenizer, setup.Template, spec.MaxPromptLength, spec.MaxLength,
            done => reporter.Progress(new RunProgress(Math.Min(done, rows), rows, clock.Elapsed, null, "tokenize")));
        var (eval, evalStats) = DpoData.TokenizeAll(dataset.Examples(DatasetPart.Eval), setup.Tokenizer, setup.Template, spec.MaxPromptLength, spec.MaxLength);
        reporter.Event(RunEvent.Info($"tokenised {stats.Pairs:N0} training and {evalStats.Pairs:N0} evaluation pairs in {clock.Elapsed.TotalSeconds:F1} s"));
        if (stats.PromptTruncated + evalStats.PromptTruncated > 0)
            reporter.Event(RunEvent.Warn("prompts-truncated", $"{stats.PromptTruncated:N0} training and {evalStats.PromptTruncated:N0} evaluation pairs had " +
                $"prompts longer than maxPromptLength {spec.MaxPromptLength}; their beginnings were cut"));
        if (stats.CompletionTruncated + evalStats.CompletionTruncated > 0)
            reporter.Event(RunEvent.Warn("sequences-truncated", $"{stats.CompletionTruncated:N0} training and {evalStats.CompletionTruncated:N0} evaluation pairs " +
                $"had a side longer than maxLength {spec.MaxLength}; its completion was cut at the end"));
        if (stats.DroppedIdentical + evalStats.DroppedIdentical > 0)
            reporter.Event(RunEvent.Warn("pairs-dropped", $"{stats.DroppedIdentical:N0} training and {evalStats.DroppedIdentical:N0} evaluation pairs " +
                $"were dropped: chosen and rejected were identical within maxLength {spec.MaxLength}"));
        if (train.Count == 0)
            throw new TrainerSetupException($"dataset {dataset.Name} gave no usable preference pair (chosen different from rejected within maxLength {spec.MaxLength})");
        return (train, eval);
    }

    /// <summary>The first <see cref="SamplePrompts"/> distinct evaluation prompts with the reference model's completions.</summary>
    public static List<DpoSamplePrompt> SampleTable(DpoSpec spec, IEnumerable<PreferenceExample> evalExamples, TrainableModel<Models.CausalLanguageModel> setup,
        DpoReference reference, CancellationToken cancel)
    {
        var prompts = evalExamples.Select(e => e.Prompt).Distinct().Take(SamplePrompts).ToList();
        if (prompts.Count == 0) return [];
        var ids = prompts.Select(p => setup.Template.TokenizePrompt(setup.Tokenizer, p)).ToList();
        var completions = reference.Generate(setup.Tokenizer, ids, EvalGeneration.SampleSettings(spec), cancel);
        return prompts.Select((p, i) => new DpoSamplePrompt(p, ids[i], completions[i])).ToList();
    }
}
