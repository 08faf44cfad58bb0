using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Generation;

/// <summary>Generation the slow, obvious way, as the reference for the cached generator: every step runs the whole
/// sequence again without a cache and takes the argmax of the last position.</summary>
internal static class GenerationReference
{
    public static long[][] GreedyWithoutCache(CausalLanguageModel model, long[][] prompts, int newTokens, long pad)
    {
        var rows = prompts.Select(p => p.ToList()).ToArray();
        int promptLength = prompts.Max(p => p.Length);
        using var noGrad = torch.no_grad();
        for (int step = 0; step < newTokens; step++)
        {
            using var scope = NewDisposeScope();
            var (ids, mask) = LeftPad(rows, promptLength + step, pad);
            var logits = model.Forward(ids, mask);
            var next = logits.select(1, -1).argmax(-1).data<long>().ToArray();
            for (int r = 0; r < rows.Length; r++) rows[r].Add(next[r]);
        }
        return rows.Select((r, i) => r.Skip(prompts[i].Length).ToArray()).ToArray();
    }

    /// <summary>TextGenerator.Generate on the prompts, left padded with <paramref name="pad"/>.</summary>
    public static GenerationResult Run(CausalLanguageModel model, long[][] prompts, GenerationSettings settings, Action<GenerationStep>? onStep = null,
        Func<Tensor, Tensor>? readout = null, long pad = 0)
    {
        var (ids, mask) = PromptBatch.LeftPad(prompts.Select(p => (IReadOnlyList<int>)p.Select(x => (int)x).ToList()).ToList(), pad);
        using (ids)
        using (mask)
            return TextGenerator.Generate(model, ids, mask, settings, onStep, readout: readout);
    }

    /// <summary>log_softmax(logits / (T + 1e-7)) at each response token from one forward over prompt + response
    /// (what TRL's PPO recomputes): (B, N).</summary>
    public static Tensor LogProbsOf(CausalLanguageModel model, Tensor sequences, Tensor promptMask, long promptLength, double temperature)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        long b = sequences.shape[0], n = sequences.shape[1] - promptLength;
        var mask = torch.cat([promptMask.to(ScalarType.Int64), torch.ones([b, n], dtype: ScalarType.Int64)], 1);
        var logits = model.Forward(sequences, mask).to(ScalarType.Float32);
        var predicting = logits.narrow(1, promptLength - 1, n) / (temperature + 1e-7);
        var all = F.log_softmax(predicting, -1);
        var response = sequences.narrow(1, promptLength, n);
        return all.gather(2, response.unsqueeze(2)).squeeze(2).MoveToOuterDisposeScope();
    }

    public static (Tensor Ids, Tensor Mask) LeftPad(IReadOnlyList<IReadOnlyList<long>> rows, int length, long pad)
    {
        var ids = new long[rows.Count * length];
        var mask = new long[rows.Count * length];
        for (int r = 0; r < rows.Count; r++)
            for (int c = 0; c < length; c++)
            {
                int offset = length - rows[r].Count;
                ids[r * length + c] = c >= offset ? rows[r][c - offset] : pad;
                mask[r * length + c] = c >= offset ? 1 : 0;
            }
        return (torch.tensor(ids, [rows.Count, length], dtype: ScalarType.Int64), torch.tensor(mask, [rows.Count, length], dtype: ScalarType.Int64));
    }

    public static long[][] Rows(Tensor t) =>
        Enumerable.Range(0, (int)t.shape[0]).Select(r => { using var row = t[r]; return row.data<long>().ToArray(); }).ToArray();

    /// <summary>Three prompts of lengths 5, 2 and 7 for the 61-token test vocabulary.</summary>
    public static long[][] Prompts() => [[5, 9, 13, 21, 8], [17, 4], [33, 6, 12, 40, 41, 3, 19]];

    /// <summary>A random Llama with 16-wide heads: on an AVX-512 CPU its decode steps run through the fused CPU decoder
    /// (GenerationSettings.FusedCpuDecode), so the generator tests check that path against the uncached reference.</summary>
    public static CausalLanguageModel Model(ScalarType dtype = ScalarType.Float32, int kvHeads = 2) =>
        TestModels.RandomCausal(TestModels.Llama(kvHeads: kvHeads, hidden: 64), seed: 11, dtype: dtype);
}
