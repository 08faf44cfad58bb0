// A DPO micro-batch as TRL's concatenated_forward builds it: the chosen sides of its P pairs, then their rejected
// sides, stacked into one (2P, L) right-padded batch so that the policy (and the reference) run ONE forward per step.
//
// No attention mask is passed: with right padding every pad sits after the last real token of its row, and causal
// attention never lets a real token see a later position, so the real tokens' logits are exactly those of the
// unpadded row (what TRL's mask achieves) and the cheaper causal-only attention path is used. Pad positions' own
// outputs are garbage and never read: Targets ignores them.
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Dpo;

/// <param name="InputIds">(2P, L): chosen rows 0..P-1, rejected rows P..2P-1.</param>
/// <param name="Targets">(2P, L-1): the next token where it is a completion token of the row, else IgnoreIndex.</param>
/// <param name="ChosenTargets">Number of completion tokens predicted in the chosen rows (the RPO term's mean is over them).</param>
/// <param name="ReferenceChosen">Precomputed reference log-probabilities (P), or null to compute them with the reference.</param>
public sealed record DpoBatch(Tensor InputIds, Tensor Targets, int Pairs, long Tokens, long ChosenTargets, Tensor? ReferenceChosen = null, Tensor? ReferenceRejected = null)
{
    public const long IgnoreIndex = -100;

    /// <summary>Collates <paramref name="pairs"/>; <paramref name="referenceLogProbs"/> (chosen, rejected per pair) when
    /// the reference's log-probabilities were precomputed.</summary>
    public static DpoBatch Collate(IReadOnlyList<DpoPair> pairs, long padId, Device device, IReadOnlyList<(float Chosen, float Rejected)>? referenceLogProbs = null)
    {
        if (pairs.Count == 0) throw new ArgumentException("no pairs to collate", nameof(pairs));
        var rows = pairs.Select(p => p.Chosen).Concat(pairs.Select(p => p.Rejected)).ToList();
        int b = rows.Count, length = rows.Max(r => r.Ids.Length);
        if (length < 2) throw new ArgumentException("every batch needs a sequence of at least 2 tokens", nameof(pairs));
        var ids = new long[b * length];
        var targets = new long[b * (length - 1)];
        long tokens = 0, chosenTargets = 0;
        for (int r = 0; r < b; r++)
        {
            var row = rows[r];
            tokens += row.Ids.Length;
            for (int t = 0; t < length; t++)
            {
                bool real = t < row.Ids.Length;
                ids[r * length + t] = real ? row.Ids[t] : padId;
                // Position t-1 predicts token t: a target only where token t is a real completion token. The first
                // token is never predicted, so a completion starting at 0 (no prompt) loses its first token, as in TRL.
                if (t > 0) targets[r * (length - 1) + t - 1] = real && row.Completion[t] ? row.Ids[t] : IgnoreIndex;
                if (t > 0 && r < pairs.Count && real && row.Completion[t]) chosenTargets++;
            }
        }
        Tensor? refChosen = null, refRejected = null;
        if (referenceLogProbs is not null)
        {
            if (referenceLogProbs.Count != pairs.Count) throw new ArgumentException("one reference entry per pair is needed", nameof(referenceLogProbs));
            refChosen = torch.tensor(referenceLogProbs.Select(r => r.Chosen).ToArray(), dtype: ScalarType.Float32, device: device);
            refRejected = torch.tensor(referenceLogProbs.Select(r => r.Rejected).ToArray(), dtype: ScalarType.Float32, device: device);
        }
        return new DpoBatch(
            torch.tensor(ids, [b, length], dtype: ScalarType.Int64, device: device),
            torch.tensor(targets, [b, length - 1], dtype: ScalarType.Int64, device: device),
            pairs.Count, tokens, chosenTargets, refChosen, refRejected);
    }

    /// <summary>Summed completion log-probabilities (2P) in fp32 under <paramref name="model"/>, with its graph (the
    /// caller decides about no_grad): log_softmax at each target, 0 at ignored positions (CausalLanguageModel.TokenLogProbs).</summary>
    public Tensor SequenceLogProbs(CausalLanguageModel model)
    {
        using var scope = NewDisposeScope();
        long length = InputIds.shape[1];
        var hidden = model.Hidden(InputIds).narrow(1, 0, length - 1);                             // (2P, L-1, C)
        var (logProbs, _) = model.TokenLogProbs(hidden, Targets, 1.0);
        return logProbs.sum(1).MoveToOuterDisposeScope();                                         // (2P)
    }

    /// <summary>Splits per-row values (2P) into the chosen (P) and rejected (P) halves.</summary>
    public (Tensor Chosen, Tensor Rejected) Split(Tensor perRow) => (perRow.narrow(0, 0, Pairs), perRow.narrow(0, Pairs, Pairs));
}
