// The SFT job: dataset check -> model setup -> tokenise once (padded or packed) -> TrainingLoop -> final/ folder.
using System.Diagnostics;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers;

public sealed class SftJob : ITrainingJob
{
    public const string FinalFolderName = "final";

    public RunOutcome Run(RunContext context) => JobFailures.Guard(() =>
    {
        var spec = context.Spec as SftSpec ?? throw new ArgumentException($"an SFT job needs an SFT spec, got {context.Spec.Method}");
        var reporter = context.Reporter;
        // The dataset's format is checked before the model loads: the cheaper mistake to report first.
        var dataset = Dataset.Open(spec.Dataset, TrainingMethod.Sft, spec.Seed);
        reporter.Event(RunEvent.Info($"dataset {dataset.Name}: {DatasetFormats.Describe(dataset.Format)} data; evaluation on {dataset.EvalDescription}"));
        using var setup = ModelSetup.ForCausalLm(spec, reporter);
        var (train, eval, samples) = Prepare(spec, dataset, setup, reporter);
        var questions = ArithmeticEvaluation.IsArithmetic(spec.Dataset)
            ? ArithmeticEvaluation.HeldOutQuestions(SftTask.ExactMatchQuestions, spec.Seed)
            : [];
        var task = new SftTask(spec, setup, train, eval, samples, questions, reporter, context.Cancellation);
        var outcome = new TrainingLoop<SftBatch>(context, task).Run();
        if (outcome.State != RunEndState.Completed) return outcome;
        var final = setup.SaveFinal(Path.Combine(context.OutputDirectory, FinalFolderName), TrainingMethod.Sft);
        reporter.Event(RunEvent.Info($"final model written to {final}"));
        return RunOutcome.Completed(final, outcome.LastCheckpoint);
    });

    /// <summary>Tokenised training and evaluation sequences (padded or packed) and the sample prompts.</summary>
    public static (List<SftSequence> Train, List<SftSequence> Eval, List<SamplePrompt> Samples) Prepare(
        SftSpec spec, Dataset dataset, TrainableModel<CausalLanguageModel> setup, IRunReporter reporter)
    {
        var tokenizer = setup.Tokenizer;
        int? maxLength = spec.Packing ? null : spec.MaxLength;
        long total = dataset.CountRows(DatasetPart.Train);
        var clock = Stopwatch.StartNew();
        reporter.Progress(new RunProgress(0, total, clock.Elapsed, null, "tokenize"));
        var (train, stats) = SftData.TokenizeAll(dataset.Examples(DatasetPart.Train), tokenizer, setup.Template, maxLength, spec.CompletionOnlyLoss,
            done => reporter.Progress(new RunProgress(done, total, clock.Elapsed, null, "tokenize")));
        var evalExamples = dataset.Examples(DatasetPart.Eval).ToList();
        var (eval, evalStats) = SftData.TokenizeAll(evalExamples, tokenizer, setup.Template, maxLength, spec.CompletionOnlyLoss);
        reporter.Event(RunEvent.Info($"tokenised {stats.Examples:N0} training examples ({stats.Tokens:N0} tokens, " +
            $"{stats.Tokens / (double)Math.Max(1, train.Count):F1} per sequence) and {evalStats.Examples:N0} evaluation examples " +
            $"in {clock.Elapsed.TotalSeconds:F1} s"));
        if (stats.Truncated + evalStats.Truncated > 0)
            reporter.Event(RunEvent.Warn("sequences-truncated", $"{stats.Truncated:N0} training and {evalStats.Truncated:N0} evaluation sequences " +
                $"were longer than maxLength {spec.MaxLength} and were cut at the end"));
        if (stats.DroppedEmpty + evalStats.DroppedEmpty > 0)
            reporter.Event(RunEvent.Warn("sequences-dropped", $"{stats.DroppedEmpty:N0} training and {evalStats.DroppedEmpty:N0} evaluation sequences " +
                $"had no completion token within maxLength {spec.MaxLength} and were dropped"));

        if (spec.Packing)
        {
            int eos = tokenizer.EosId!.Value;   // checked by ModelSetup.Preflight
            var packed = SftData.Pack(train.Select(s => s.Ids), spec.MaxLength, eos);
            if (packed.Count == 0)
                throw new TrainerSetupException($"packing: the training data has {stats.Tokens:N0} tokens, fewer than one block of maxLength " +
                    $"{spec.MaxLength}; lower maxLength or turn packing off");
            long dropped = stats.Tokens + train.Count(s => s.Ids[^1] != eos) - (long)packed.Count * spec.MaxLength;
            reporter.Event(RunEvent.Info($"packed {train.Count:N0} sequences into {packed.Count:N0} blocks of {spec.MaxLength} tokens " +
                $"(every token trained; {dropped:N0} tokens at the end did not fill a block)"));
            train = packed;
            eval = SftData.Pack(eval.Select(s => s.Ids), spec.MaxLength, eos, keepPartial: true);
        }
        if (train.Count == 0)
            throw new TrainerSetupException($"dataset {dataset.Name} gave no training sequence with a completion token within maxLength {spec.MaxLength}");
        return (train, eval, SamplePrompts(spec, evalExamples));
    }

    /// <summary>SftSpec.SamplePrompts as plain prompts, else the first NumSamples evaluation examples that have a prompt.</summary>
    public static List<SamplePrompt> SamplePrompts(SftSpec spec, IEnumerable<Example> evalExamples)
    {
        if (spec.SamplePrompts is { Count: > 0 } given) return given.Select(p => new SamplePrompt(Content.Plain(p), null)).ToList();
        var prompts = new List<SamplePrompt>();
        foreach (var example in evalExamples)
        {
            if (prompts.Count >= spec.NumSamples) break;
            switch (example)
            {
                case PromptCompletionExample pc:
                    prompts.Add(new SamplePrompt(pc.Prompt, pc.Completion.ToString()));
                    break;
                case ConversationExample c when c.Messages.Count > 1 && c.Messages[^1].Role == "assistant":
                    prompts.Add(new SamplePrompt(DatasetFormats.PromptOf(c), c.Messages[^1].Content));
                    break;
            }
        }
        return prompts;
    }
}
