// Whether a model has learned the built-in arithmetic task: greedy completions for held-out questions, checked by the
// exact scorer. exact_match is the fraction whose first number is the result (the GSM8K-style "extracted answer"
// match); true_score is the mean ArithmeticScorer score (1 clean correct, 0.5 correct with extra text, 0 wrong,
// -1 no number), which also rewards answering without rambling.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Trainers;

public sealed record ArithmeticSample(string Question, string Completion, double Score, bool Correct);

public sealed record ArithmeticReport(IReadOnlyList<ArithmeticSample> Samples)
{
    public int Count => Samples.Count;
    public double ExactMatch => Samples.Count == 0 ? 0 : Samples.Count(s => s.Correct) / (double)Samples.Count;
    public double MeanScore => Samples.Count == 0 ? 0 : Samples.Average(s => s.Score);
}

public static class ArithmeticEvaluation
{
    public const string ExactMatchMetric = "eval/exact_match";
    public const string TrueScoreMetric = "eval/true_score";
    /// <summary>Room for "The answer is 1234." and a little rambling; a model that has not learned to stop is cut here.</summary>
    public const int DefaultMaxNewTokens = 32;

    /// <summary>True when the dataset is one of the built-in arithmetic sets, whose answers can be scored exactly.</summary>
    public static bool IsArithmetic(DatasetRef dataset) => dataset.Builtin is { } name && BuiltinDatasets.Names.Contains(name);

    /// <summary>The first <paramref name="count"/> questions of the built-in test split (never seen in training).</summary>
    public static IReadOnlyList<string> HeldOutQuestions(int count, int seed) =>
        Dataset.Open(new DatasetRef { Builtin = BuiltinDatasets.ArithmeticPrompts }, TrainingMethod.Ppo, seed)
            .Examples(DatasetPart.Eval).Take(count).Select(e => DatasetFormats.PromptOf(e).ToString()).ToList();

    /// <summary>Greedy completions of <paramref name="questions"/> (formatted by <paramref name="template"/>), scored.
    /// Runs in eval mode and restores the model's mode.</summary>
    public static ArithmeticReport Run(CausalLanguageModel model, TextTokenizer tokenizer, PromptTemplate template, IReadOnlyList<string> questions,
        int maxNewTokens = DefaultMaxNewTokens, int batchSize = 64, CancellationToken cancel = default)
    {
        var settings = new GenerationSettings { MaxNewTokens = maxNewTokens, Temperature = 0 };
        var samples = new List<ArithmeticSample>(questions.Count);
        bool wasTraining = model.training;
        model.eval();
        try
        {
            for (int start = 0; start < questions.Count; start += batchSize)
            {
                var chunk = questions.Skip(start).Take(batchSize).ToList();
                var completions = TextGenerator.GenerateText(model, tokenizer, chunk, settings, template, cancel: cancel);
                for (int i = 0; i < chunk.Count; i++)
                    samples.Add(new ArithmeticSample(chunk[i], completions[i], ArithmeticScorer.Score(chunk[i], completions[i]),
                        ArithmeticScorer.IsCorrect(chunk[i], completions[i])));
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return new ArithmeticReport(samples);
    }
}
