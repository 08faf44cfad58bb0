using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Generation;

/// <summary>Prompts of different lengths as one left-padded batch: ids (B, P) and attention mask (B, P), 1 = real.
/// Left padding keeps every prompt's last token in the last column, so all rows continue from the same position.</summary>
public static class PromptBatch
{
    public static (Tensor InputIds, Tensor AttentionMask) LeftPad(IReadOnlyList<IReadOnlyList<int>> prompts, long padId, Device? device = null)
    {
        if (prompts.Count == 0) throw new ArgumentException("no prompts given", nameof(prompts));
        for (int i = 0; i < prompts.Count; i++)
            if (prompts[i].Count == 0) throw new ArgumentException($"prompt {i} has no tokens (generation needs at least one)", nameof(prompts));
        int b = prompts.Count, p = prompts.Max(x => x.Count);
        var ids = new long[b * p];
        var mask = new long[b * p];
        for (int r = 0; r < b; r++)
        {
            int offset = p - prompts[r].Count;
            for (int c = 0; c < p; c++)
            {
                bool real = c >= offset;
                ids[r * p + c] = real ? prompts[r][c - offset] : padId;
                mask[r * p + c] = real ? 1 : 0;
            }
        }
        return (torch.tensor(ids, [b, p], dtype: ScalarType.Int64, device: device),
                torch.tensor(mask, [b, p], dtype: ScalarType.Int64, device: device));
    }
}
