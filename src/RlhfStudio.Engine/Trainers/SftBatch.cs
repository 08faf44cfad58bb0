using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers;

/// <summary>A right-padded SFT micro-batch. <see cref="Targets"/> (B, L-1) holds the label of each position's next
/// token, <see cref="IgnoreIndex"/> where there is none (prompt, padding). The attention mask is null when no row is
/// padded (the cheaper causal-only attention).</summary>
public sealed record SftBatch(Tensor InputIds, Tensor? AttentionMask, Tensor Targets)
{
    /// <summary>PyTorch's and transformers' ignore label: the one the token loss skips.</summary>
    public const long IgnoreIndex = LinearCrossEntropy.IgnoreIndex;

    /// <summary>Pads <paramref name="rows"/> on the right with <paramref name="padId"/>. Labels come from each row's
    /// trained flags and its length, never from comparing ids with the pad id (pad may equal EOS, whose label trains).</summary>
    public static MicroBatch<SftBatch> Collate(IReadOnlyList<SftSequence> rows, long padId, Device device)
    {
        if (rows.Count == 0) throw new ArgumentException("no rows to collate", nameof(rows));
        int b = rows.Count, length = rows.Max(r => r.Ids.Length);
        if (length < 2) throw new ArgumentException("every batch needs a sequence of at least 2 tokens", nameof(rows));
        var ids = new long[b * length];
        var mask = new long[b * length];
        var targets = new long[b * (length - 1)];
        long items = 0, tokens = 0;
        bool padded = false;
        for (int r = 0; r < b; r++)
        {
            var row = rows[r];
            padded |= row.Ids.Length < length;
            tokens += row.Ids.Length;
            for (int t = 0; t < length; t++)
            {
                bool real = t < row.Ids.Length;
                ids[r * length + t] = real ? row.Ids[t] : padId;
                mask[r * length + t] = real ? 1 : 0;
                if (t == 0) continue;
                bool label = real && row.Trained[t];
                targets[r * (length - 1) + t - 1] = label ? row.Ids[t] : IgnoreIndex;
                if (label) items++;
            }
        }
        var batch = new SftBatch(
            torch.tensor(ids, [b, length], dtype: ScalarType.Int64, device: device),
            padded ? torch.tensor(mask, [b, length], dtype: ScalarType.Int64, device: device) : null,
            torch.tensor(targets, [b, length - 1], dtype: ScalarType.Int64, device: device));
        return new MicroBatch<SftBatch>(batch, items, tokens);
    }

    /// <summary>Token-level cross-entropy summed over the labelled positions (fp32), and how many of them the model's
    /// argmax predicts (for mean_token_accuracy).</summary>
    public (Tensor LossSum, long Correct) Loss(CausalLanguageModel model)
    {
        long length = InputIds.shape[1];
        var hidden = model.Hidden(InputIds, AttentionMask).narrow(1, 0, length - 1);          // (B, L-1, C)
        var stats = new TokenLossStats();
        var loss = model.TokenLossSum(hidden, Targets, stats);
        return (loss, stats.Correct);
    }
}
