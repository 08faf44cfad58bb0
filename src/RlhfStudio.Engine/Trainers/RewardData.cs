// Preference pairs for reward modelling, tokenised once: prompt + chosen and prompt + rejected through the template
// (EOS appended), cut at maxLength. A pair whose two sides become identical once cut (the difference lay beyond
// maxLength) can teach nothing and is dropped; both counts are reported.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Text;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Trainers;

/// <summary>One tokenised pair; <see cref="Margin"/> is the data's margin (null when it has none).</summary>
public sealed record PreferencePair(int[] Chosen, int[] Rejected, double? Margin);

public sealed record RewardTokenizeStats(int Pairs, int Truncated, int DroppedIdentical);

public static class RewardData
{
    public static PreferencePair Tokenize(PreferenceExample example, TextTokenizer tokenizer, PromptTemplate template, int maxLength, out bool truncated)
    {
        var chosen = template.Tokenize(tokenizer, example.Prompt, example.Chosen).InputIds.ToArray();
        var rejected = template.Tokenize(tokenizer, example.Prompt, example.Rejected).InputIds.ToArray();
        truncated = chosen.Length > maxLength || rejected.Length > maxLength;
        if (chosen.Length > maxLength) chosen = chosen[..maxLength];
        if (rejected.Length > maxLength) rejected = rejected[..maxLength];
        return new PreferencePair(chosen, rejected, example.Margin);
    }

    /// <summary>Tokenises every pair; <paramref name="progress"/> gets the number of examples done, every so often.
    /// Returns the pairs kept with the example each came from.</summary>
    public static (List<(PreferenceExample Example, PreferencePair Pair)> Pairs, RewardTokenizeStats Stats) TokenizeAll(IEnumerable<Example> examples,
        TextTokenizer tokenizer, PromptTemplate template, int maxLength, Action<int>? progress = null)
    {
        var pairs = new List<(PreferenceExample, PreferencePair)>();
        int count = 0, truncated = 0, identical = 0;
        foreach (var example in examples)
        {
            var preference = example as PreferenceExample
                ?? throw new ArgumentException($"{example.GetType().Name} is not a preference pair", nameof(examples));
            var pair = Tokenize(preference, tokenizer, template, maxLength, out bool cut);
            count++;
            if (cut) truncated++;
            if (pair.Chosen.AsSpan().SequenceEqual(pair.Rejected)) identical++;
            else pairs.Add((preference, pair));
            if (count % 500 == 0) progress?.Invoke(count);
        }
        progress?.Invoke(count);
        return (pairs, new RewardTokenizeStats(count, truncated, identical));
    }
}

/// <summary>A reward micro-batch: the chosen sequences of its pairs, then their rejected ones, stacked (2P, L) and
/// right-padded, with each row's last real token and the pairs' margins (null when margins are not used).</summary>
public sealed record RewardBatch(Tensor InputIds, Tensor? AttentionMask, Tensor LastIndex, Tensor? Margins, int Pairs)
{
    public const string ChosenMetric = Jobs.MetricNames.RewardsChosen;
    public const string RejectedMetric = Jobs.MetricNames.RewardsRejected;
    public const string MarginsMetric = Jobs.MetricNames.RewardsMargins;
    public const string AccuracyMetric = Jobs.MetricNames.RewardsAccuracies;

    public static RewardBatch Collate(IReadOnlyList<PreferencePair> pairs, long padId, Device device, bool useMargin)
    {
        var sequences = pairs.Select(p => (IReadOnlyList<int>)p.Chosen).Concat(pairs.Select(p => (IReadOnlyList<int>)p.Rejected)).ToList();
        var (ids, mask, last) = RewardScoring.RightPad(sequences, padId, device);
        var margins = useMargin && pairs.Any(p => p.Margin is not null)
            ? torch.tensor(pairs.Select(p => (float)(p.Margin ?? 0)).ToArray(), dtype: ScalarType.Float32, device: device)
            : null;
        return new RewardBatch(ids, mask, last, margins, pairs.Count);
    }

    public long Tokens => AttentionMask is null ? InputIds.numel() : AttentionMask.sum().item<long>();

    /// <summary>Rewards of the chosen and of the rejected sequences, (P) each, fp32.</summary>
    public (Tensor Chosen, Tensor Rejected) Rewards(Models.ScoreModel model)
    {
        var rewards = RewardScoring.Pooled(model, InputIds, AttentionMask, LastIndex);
        return (rewards.narrow(0, 0, Pairs), rewards.narrow(0, Pairs, Pairs));
    }

    /// <summary>TRL's RewardTrainer loss, summed over pairs (the loop divides by pairs): -logsigmoid(r_c - r_r - margin)
    /// (Ouyang et al. 2022, eq. 1; the margin as in Llama 2) plus <paramref name="centerCoefficient"/> * (r_c + r_r)^2
    /// (Eisenstein et al. 2023), whose mean over pairs is TRL's centering term.</summary>
    public Tensor LossSum(Tensor chosen, Tensor rejected, double centerCoefficient)
    {
        var difference = chosen - rejected;
        if (Margins is not null) difference = difference - Margins;
        var loss = F.logsigmoid(difference).sum().neg();
        if (centerCoefficient > 0)
        {
            using var coefficient = centerCoefficient.ToScalar();
            loss = loss + (chosen + rejected).pow(2).sum().mul(coefficient);
        }
        return loss;
    }

    /// <summary>Sums over pairs of the reward metrics (the loop divides them by pairs).</summary>
    public static Dictionary<string, double> MetricSums(Tensor chosen, Tensor rejected)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        return new Dictionary<string, double>(StringComparer.Ordinal)
        {
            [ChosenMetric] = chosen.sum().item<float>(),
            [RejectedMetric] = rejected.sum().item<float>(),
            [MarginsMetric] = (chosen - rejected).sum().item<float>(),
            [AccuracyMetric] = chosen.gt(rejected).sum().item<long>(),
        };
    }
}
