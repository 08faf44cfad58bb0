// What SFT and DPO evaluation generate besides the loss: the sample table for fixed prompts (seeded with the run's
// seed, so that tables of different steps compare) and, on the built-in arithmetic task, greedy answers to held-out
// questions checked by the exact scorer.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;

namespace RlhfStudio.Engine.Trainers;

/// <summary>One row of an evaluation sample table: the prompt, its token ids (template applied) and the answer to show
/// beside the model's (the dataset's completion or the reference model's), if any.</summary>
public sealed record EvalSamplePrompt(string Prompt, IReadOnlyList<int> PromptIds, string? Reference);

public static class EvalGeneration
{
    /// <summary>The sampling settings of sample tables: the run's sampling section and its seed.</summary>
    public static GenerationSettings SampleSettings(RunSpec spec) => new()
    {
        MaxNewTokens = spec.Sampling.MaxNewTokens,
        MinNewTokens = spec.Sampling.MinNewTokens,
        Temperature = spec.Sampling.Temperature,
        TopK = spec.Sampling.TopK,
        TopP = spec.Sampling.TopP,
        Seed = spec.Seed,
    };

    /// <summary>The "eval" sample table: the model's completion of each prompt; on the built-in arithmetic task each
    /// completion (and the reference answer) is scored exactly.</summary>
    public static List<SampleRow> SampleTable(TrainableModel<CausalLanguageModel> setup, RunSpec spec, IReadOnlyList<EvalSamplePrompt> prompts,
        CancellationToken cancel)
    {
        var completions = TextGenerator.GenerateText(setup.Model, setup.Tokenizer, prompts.Select(p => p.PromptIds).ToList(), SampleSettings(spec), cancel: cancel);
        bool arithmetic = ArithmeticEvaluation.IsArithmetic(spec.Dataset);
        var rows = new List<SampleRow>(completions.Count);
        for (int i = 0; i < completions.Count; i++)
        {
            var (prompt, reference) = (prompts[i].Prompt, prompts[i].Reference);
            bool scorable = arithmetic && ArithmeticTask.TryParse(prompt, out _);
            rows.Add(new SampleRow(i, prompt, completions[i],
                Score: scorable ? ArithmeticScorer.Score(prompt, completions[i]) : null,
                Reference: reference,
                ReferenceScore: scorable && reference is not null ? ArithmeticScorer.Score(prompt, reference) : null,
                Table: "eval"));
        }
        return rows;
    }

    /// <summary>Adds <c>eval/exact_match</c> and <c>eval/true_score</c> on <paramref name="questions"/> (none: nothing added).</summary>
    public static void AddExactMatch(Dictionary<string, double> metrics, TrainableModel<CausalLanguageModel> setup, IReadOnlyList<string> questions,
        CancellationToken cancel)
    {
        if (questions.Count == 0) return;
        var report = ArithmeticEvaluation.Run(setup.Model, setup.Tokenizer, setup.Template, questions, cancel: cancel);
        metrics[ArithmeticEvaluation.ExactMatchMetric] = report.ExactMatch;
        metrics[ArithmeticEvaluation.TrueScoreMetric] = report.MeanScore;
    }
}
