// Scalar rewards from a score model, pooled at each row's LAST REAL TOKEN. The index comes from the row lengths, not
// from comparing ids with the pad id (transformers' way): with pad == eos, the EOS the template appends is a real token
// and is where the reward is read; transformers would read the token before it. Shared by the reward trainer, the CLI
// and the RL trainers, so a reward is read the same way everywhere in the engine.
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers;

public static class RewardScoring
{
    /// <summary>Rewards (B) in fp32 for right-padded <paramref name="inputIds"/> (B, L): the score head applied to the
    /// final hidden state at <paramref name="lastIndex"/> (B) of each row. Keeps the autograd graph.</summary>
    public static Tensor Pooled(ScoreModel model, Tensor inputIds, Tensor? attentionMask, Tensor lastIndex)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Hidden(inputIds, attentionMask);                                     // (B, L, H)
        var index = lastIndex.view(-1, 1, 1).expand(hidden.shape[0], 1, hidden.shape[2]);      // (B, 1, H)
        var pooled = hidden.gather(1, index).squeeze(1);                                        // (B, H)
        return model.Scores(pooled).select(-1, 0).to(ScalarType.Float32).MoveToOuterDisposeScope();   // (B)
    }

    /// <summary>Right-pads token sequences into (B, L) ids, an attention mask (null when no row is padded) and the index
    /// of each row's last real token.</summary>
    public static (Tensor InputIds, Tensor? AttentionMask, Tensor LastIndex) RightPad(IReadOnlyList<IReadOnlyList<int>> sequences, long padId, Device device)
    {
        if (sequences.Count == 0) throw new ArgumentException("no sequences given", nameof(sequences));
        if (sequences.Any(s => s.Count == 0)) throw new ArgumentException("a sequence has no tokens", nameof(sequences));
        int b = sequences.Count, length = sequences.Max(s => s.Count);
        var ids = new long[b * length];
        var mask = new long[b * length];
        var last = new long[b];
        bool padded = false;
        for (int r = 0; r < b; r++)
        {
            var s = sequences[r];
            padded |= s.Count < length;
            last[r] = s.Count - 1;
            for (int t = 0; t < length; t++)
            {
                bool real = t < s.Count;
                ids[r * length + t] = real ? s[t] : padId;
                mask[r * length + t] = real ? 1 : 0;
            }
        }
        return (torch.tensor(ids, [b, length], dtype: ScalarType.Int64, device: device),
                padded ? torch.tensor(mask, [b, length], dtype: ScalarType.Int64, device: device) : null,
                torch.tensor(last, [b], dtype: ScalarType.Int64, device: device));
    }

    /// <summary>The reward of each token sequence (already formatted and tokenised, e.g. with the template's Tokenize),
    /// in batches, without gradients. Runs in eval mode and restores the model's mode.</summary>
    public static float[] Score(ScoreModel model, IReadOnlyList<IReadOnlyList<int>> sequences, long padId, int batchSize = 32)
    {
        var rewards = new float[sequences.Count];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            for (int start = 0; start < sequences.Count; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var chunk = sequences.Skip(start).Take(batchSize).ToList();
                var (ids, mask, last) = RightPad(chunk, padId, model.Device);
                var values = Pooled(model, ids, mask, last).data<float>().ToArray();
                values.CopyTo(rewards, start);
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return rewards;
    }
}
