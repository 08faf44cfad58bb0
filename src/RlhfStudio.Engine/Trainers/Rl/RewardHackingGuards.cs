// Warnings for the ways on-policy RLHF goes wrong while its curves look fine (TRL's PPO docs on reading the logs;
// the StackLLaMA write-up, whose policy learned to emit runs of backticks that the reward model liked). Each warning
// is raised when its condition starts to hold and again only after it has cleared, so the log is not flooded.
using System.Text.RegularExpressions;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>What one step measured, for the guards.</summary>
/// <param name="MeanKl">objective/kl: mean over responses of the summed per-token KL.</param>
/// <param name="MeanScore">objective/scores.</param>
/// <param name="Entropy">Mean per-token entropy of the policy (policy/entropy_avg).</param>
/// <param name="Responses">The decoded responses of the rollout.</param>
public sealed record GuardInput(double MeanKl, double MeanScore, double Entropy, IReadOnlyList<string> Responses);

public sealed partial class RewardHackingGuards
{
    public const string KlNegative = "kl-negative";
    public const string EntropyCollapse = "entropy-collapse";
    public const string DegenerateSamples = "degenerate-samples";

    /// <summary>Mean KL below minus this (nats per response) is more than sampling noise: the k1 estimator is unbiased
    /// and KL is never negative, so the policy is being scored against the wrong reference or the log-probabilities are off.</summary>
    public double KlTolerance { get; init; } = 0.05;
    /// <summary>Consecutive steps the KL must stay below the tolerance: with small batches of short responses a single
    /// step's estimate is noisy (its per-sequence k1 terms can be negative), a KL that stays negative is not.</summary>
    public int KlNegativeSteps { get; init; } = 3;
    /// <summary>Entropy below this fraction of the first step's, while the score is above the first step's.</summary>
    public double EntropyFraction { get; init; } = 0.25;
    /// <summary>Fraction of a rollout's responses that must be degenerate to warn.</summary>
    public double DegenerateFraction { get; init; } = 0.25;

    private double? _startEntropy;
    private double? _startScore;
    private readonly HashSet<string> _active = [];
    private int _negativeKlRun;

    /// <summary>Baseline values (first step), for a resumed run.</summary>
    public (double? Entropy, double? Score) Baseline => (_startEntropy, _startScore);

    public void RestoreBaseline(double? entropy, double? score)
    {
        _startEntropy = entropy;
        _startScore = score;
    }

    /// <summary>The warnings that start at <paramref name="step"/>.</summary>
    public IReadOnlyList<RunEvent> Check(long step, GuardInput input)
    {
        _startEntropy ??= input.Entropy;
        _startScore ??= input.MeanScore;
        var events = new List<RunEvent>();

        _negativeKlRun = input.MeanKl < -KlTolerance ? _negativeKlRun + 1 : 0;
        Raise(KlNegative, _negativeKlRun >= KlNegativeSteps,
            $"mean KL to the reference is {input.MeanKl:F3}, negative for {_negativeKlRun} steps: the policy's log-probabilities are below the reference's on its own " +
            "samples, which a real KL never is. Check that the reference is the policy's starting model and that sampling is plain temperature sampling.");

        double start = _startEntropy.Value;
        Raise(EntropyCollapse, start > 0 && input.Entropy < EntropyFraction * start && input.MeanScore > _startScore.Value,
            $"policy entropy fell to {input.Entropy:F3} ({input.Entropy / start:P0} of its starting {start:F3}) while the score rose: the policy is " +
            "collapsing onto a few outputs the reward favours (reward hacking). Raise klCoef or lower the learning rate.");

        int degenerate = input.Responses.Count(IsDegenerate);
        Raise(DegenerateSamples, input.Responses.Count > 0 && degenerate >= Math.Max(1, DegenerateFraction * input.Responses.Count),
            $"{degenerate} of {input.Responses.Count} responses are degenerate (a run of repeated symbols such as ``````, or the same phrase " +
            "repeated): the reward model may be rewarding them. Inspect the samples; raise klCoef or fix the reward model.");
        return events;

        void Raise(string code, bool condition, string message)
        {
            if (!condition)
            {
                _active.Remove(code);
                return;
            }
            if (_active.Add(code)) events.Add(RunEvent.Warn(code, $"step {step}: {message}", step));
        }
    }

    /// <summary>A response that degenerated: a run of six or more of the same non-alphanumeric symbol (backticks, "!!!!!!"),
    /// or a word trigram repeated four or more times.</summary>
    public static bool IsDegenerate(string text)
    {
        if (SymbolRun().IsMatch(text)) return true;
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (words.Length < 12) return false;
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + 3 <= words.Length; i++)
        {
            var gram = string.Join(' ', words, i, 3);
            int c = counts.GetValueOrDefault(gram) + 1;
            if (c >= 4) return true;
            counts[gram] = c;
        }
        return false;
    }

    [GeneratedRegex(@"([^\p{L}\p{N}\s])\1{5,}")]
    private static partial Regex SymbolRun();
}
