// Where the sequence-level score of a response comes from: a reward model, or a built-in function that checks the
// answer exactly (the arithmetic task), which needs no reward model and cannot be hacked.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>Scores (B) fp32 of query + response sequences.</summary>
public interface ISequenceScorer : IDisposable
{
    /// <summary>Shown in logs: "reward model ./rm", "builtin:arithmetic".</summary>
    string Name { get; }

    /// <param name="batch">The token ids and attention mask of query + (truncated) response.</param>
    /// <param name="prompts">The prompts as given in the dataset (before the template).</param>
    /// <param name="responses">The decoded responses (special tokens removed).</param>
    Tensor Score(SequenceBatch batch, IReadOnlyList<string> prompts, IReadOnlyList<string> responses);
}

/// <summary>A reward model: its score at the last real token of each sequence. The model is frozen (set its compute
/// dtype before): its compute-dtype (and fused) inference weights are made once, for the scorer's lifetime.</summary>
public sealed class RewardModelScorer(ScoreModel model, string name, bool owned = true) : ISequenceScorer
{
    private readonly InferenceWeightsScope _weights = model.UseInferenceWeights();

    public ScoreModel Model { get; } = model;
    public string Name { get; } = name;

    public Tensor Score(SequenceBatch batch, IReadOnlyList<string> prompts, IReadOnlyList<string> responses)
    {
        using var noGrad = no_grad();
        return SequenceForward.SequenceScores(Model, batch);
    }

    public void Dispose()
    {
        _weights.Dispose();
        if (owned) Model.Dispose();
    }
}

/// <summary>A built-in scoring function of (prompt, response) text.</summary>
public sealed class BuiltinScorer(string name, Func<string, string, double> score) : ISequenceScorer
{
    public const string Arithmetic = "arithmetic";

    public string Name { get; } = "builtin:" + name;

    /// <summary>The scorer named <paramref name="name"/>, or null when there is none.</summary>
    public static BuiltinScorer? Named(string name) => name switch
    {
        Arithmetic => new BuiltinScorer(name, ArithmeticScorer.Score),
        _ => null,
    };

    public static IReadOnlyList<string> Names { get; } = [Arithmetic];

    public double ScoreOne(string prompt, string response) => score(prompt, response);

    public Tensor Score(SequenceBatch batch, IReadOnlyList<string> prompts, IReadOnlyList<string> responses)
    {
        var values = prompts.Select((p, i) => (float)score(p, responses[i])).ToArray();
        return torch.tensor(values, dtype: ScalarType.Float32, device: batch.Ids.device);
    }

    public void Dispose() { }
}
