using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Models;

/// <summary>Attention through the CPU kernels (AttentionFunction) against libtorch's scaled_dot_product_attention on
/// repeated kv heads: output and the gradients of q, k and v, causal, masked and unmasked, grouped kv heads, sequence
/// lengths that are and are not multiples of the vector width, q/k/v as strided views of one projection output.</summary>
public class AttentionKernelTests
{
    private sealed record Outputs(Tensor Y, Tensor Dq, Tensor Dk, Tensor Dv);

    /// <summary>q, k, v as views into one (B, T, nh + 2 kvh, hs) tensor, as the fused q/k/v projection gives them; with
    /// <paramref name="rope"/> q and k rotated first (libtorch's rotary ops, or inside the kernels when packed).</summary>
    private static Outputs Run(Tensor qkv0, int heads, int kvHeads, Tensor upstream, Tensor? mask, bool causal, string path, RotaryTables? rope = null)
    {
        var qkv = qkv0.detach().clone().requires_grad_(true);
        Tensor y;   // (B, T, nh, hs)
        if (path == "packed")
        {
            var tables = rope!.Value;
            Assert.True(AttentionFunction.CoversPacked(qkv, heads, kvHeads, tables.Cos32!, tables.SinSigned32!, mask));
            y = AttentionFunction.ApplyPacked(qkv, heads, kvHeads, tables.Cos32!, tables.SinSigned32!, mask, causal);
        }
        else
        {
            var qk = qkv.narrow(2, 0, heads + kvHeads);
            if (rope is { } tables) qk = Rotary.Apply(qk, tables);
            var q = qk.narrow(2, 0, heads).transpose(1, 2);
            var k = qk.narrow(2, heads, kvHeads).transpose(1, 2);
            var v = qkv.narrow(2, heads + kvHeads, kvHeads).transpose(1, 2);
            if (path == "kernel")
            {
                Assert.True(AttentionFunction.Covers(q, k, v, mask));
                y = AttentionFunction.Apply(q, k, v, mask, causal);
            }
            else
            {
                long groups = heads / kvHeads;
                y = F.scaled_dot_product_attention(q, Trunk.RepeatKv(k, groups), Trunk.RepeatKv(v, groups), attn_mask: mask, is_casual: causal).transpose(1, 2);
            }
        }
        (y.to(ScalarType.Float32) * upstream).sum().backward();
        var grad = qkv.grad!.to(ScalarType.Float32);
        return new Outputs(y.detach().to(ScalarType.Float32), grad.narrow(2, 0, heads), grad.narrow(2, heads, kvHeads), grad.narrow(2, heads + kvHeads, kvHeads));
    }

    [Theory]
    [InlineData(ScalarType.Float32, 2, 4, 4, 37, "causal", false)]
    [InlineData(ScalarType.Float32, 3, 4, 2, 64, "causal", false)]    // grouped kv heads
    [InlineData(ScalarType.Float32, 2, 2, 1, 23, "mask", false)]      // left padding: per-sequence key mask with the causal pattern
    [InlineData(ScalarType.Float32, 2, 2, 2, 19, "none", false)]
    [InlineData(ScalarType.Float32, 2, 4, 2, 29, "keys", false)]      // a key mask without the causal pattern: the full square
    [InlineData(ScalarType.BFloat16, 2, 2, 2, 40, "keys", false)]
    [InlineData(ScalarType.Float32, 1, 2, 2, 1, "causal", false)]     // a single token
    [InlineData(ScalarType.BFloat16, 2, 4, 2, 70, "causal", false)]
    [InlineData(ScalarType.BFloat16, 2, 2, 2, 33, "mask", false)]
    // Packed q/k/v with the rotary embedding inside the kernels, against libtorch's rotary ops and SDPA.
    [InlineData(ScalarType.Float32, 2, 4, 4, 37, "causal", true)]
    [InlineData(ScalarType.Float32, 3, 4, 2, 64, "causal", true)]
    [InlineData(ScalarType.Float32, 2, 2, 1, 23, "mask", true)]       // left-padded positions: per-sequence tables
    [InlineData(ScalarType.Float32, 1, 2, 2, 1, "causal", true)]
    [InlineData(ScalarType.BFloat16, 2, 4, 2, 70, "causal", true)]
    [InlineData(ScalarType.BFloat16, 2, 2, 2, 33, "mask", true)]
    public void The_kernels_give_sdpa_outputs_and_gradients(ScalarType dtype, int batch, int heads, int kvHeads, int length, string pattern, bool packed)
    {
        if (!CpuKernels.IsSupported) return;   // the kernels are not used on this CPU
        using var scope = NewDisposeScope();
        const int HeadSize = 32;
        var gen = new Generator(21);
        var qkv = (torch.randn([batch, length, heads + 2 * kvHeads, HeadSize], generator: gen) * 1.5).to(dtype);
        var upstream = torch.randn([batch, length, heads, HeadSize], generator: gen);
        Tensor? mask = null, attention = null;
        bool causal = pattern == "causal";
        if (pattern == "mask")
        {
            // The first sequence left-padded by 3 tokens, the rest not: built as the trunk builds it.
            attention = torch.ones([batch, length], dtype: ScalarType.Int64);
            attention[0, TensorIndex.Slice(0, 3)] = torch.zeros(3, dtype: ScalarType.Int64);
            mask = AttentionInputs.Build(attention, 0, length, torch.CPU).Mask;
        }
        if (pattern == "keys")
        {
            // Every query sees every key but the first sequence's last 5 (no causal pattern).
            var keep = torch.ones([batch, 1, 1, length], dtype: ScalarType.Bool);
            keep[0, 0, 0, TensorIndex.Slice(length - 5, length)] = torch.zeros(5, dtype: ScalarType.Bool);
            mask = keep.expand(batch, 1, length, length);
        }
        RotaryTables? rope = null;
        if (packed)
        {
            // Positions as the trunk derives them (left padding shifts the first sequence's), tables as the model looks them up.
            var positions = AttentionInputs.PositionIds(attention, batch, 0, length, torch.CPU);
            using var cache = new RotaryCache(Rotary.InverseFrequencies(HeadSize, 10000, null), length);
            rope = cache.Lookup(positions, length - 1, dtype);   // gathered copies: they outlive the cache
        }
        var fused = Run(qkv, heads, kvHeads, upstream, mask, causal, packed ? "packed" : "kernel", rope);
        var reference = Run(qkv, heads, kvHeads, upstream, mask, causal, "sdpa", rope);
        // fp32: summation order only. bf16: the kernels keep scores and probabilities (and the rotation) in fp32 where
        // libtorch rounds them to bf16 between its ops, so the two differ by a few bf16 steps.
        double tolerance = dtype == ScalarType.Float32 ? 2e-5 : 3e-2;
        foreach (var (name, a, r) in new[] { ("y", fused.Y, reference.Y), ("dq", fused.Dq, reference.Dq), ("dk", fused.Dk, reference.Dk), ("dv", fused.Dv, reference.Dv) })
        {
            Assert.False(a.isnan().any().item<bool>(), $"{name} has NaN");
            // Relative to the larger of the reference's magnitude and 1 (a single token's dq is zero up to rounding).
            double diff = TestModels.MaxDiff(a, r) / Math.Max(1.0, r.abs().max().item<float>());
            Assert.True(diff < tolerance, $"{dtype} {pattern} packed={packed} {name}: relative difference {diff}");
        }
    }

    [Fact]
    public void Padded_masks_stay_within_the_causal_pattern_and_leave_no_query_without_a_key()
    {
        using var scope = NewDisposeScope();
        // Left padding (pad queries would see nothing) and right padding (pad keys after the end).
        var attention = torch.tensor(new long[,] { { 0, 0, 1, 1, 1 }, { 1, 1, 1, 0, 0 } });
        var mask = AttentionInputs.Build(attention, 0, 5, torch.CPU).Mask!;
        Assert.Equal(new long[] { 2, 1, 5, 5 }, mask.shape);
        Assert.False(mask.logical_and(torch.ones([5, 5], dtype: ScalarType.Bool).triu(1)).any().item<bool>());   // nothing after a query
        Assert.True(mask.any(-1).all().item<bool>());                                                            // every query sees a key
        // A pad query under left padding sees only its own key; a real query never sees a pad key.
        Assert.Equal(new[] { true, false, false, false, false }, mask[0, 0, 0].data<bool>().ToArray());
        Assert.Equal(new[] { false, true, false, false, false }, mask[0, 0, 1].data<bool>().ToArray());
        Assert.Equal(new[] { false, false, true, true, true }, mask[0, 0, 4].data<bool>().ToArray());
    }

    [Fact]
    public void A_mask_of_ones_over_whole_sequences_is_plain_causal_attention()
    {
        using var scope = NewDisposeScope();
        var ones = torch.ones([3, 6], dtype: ScalarType.Int64);
        Assert.Equal((null, true), AttentionInputs.Build(ones, 0, 6, torch.CPU));
        Assert.Equal((null, false), AttentionInputs.Build(ones.narrow(1, 0, 1), 0, 1, torch.CPU));      // one token: nothing to hide
        Assert.NotNull(AttentionInputs.Build(torch.ones([3, 8], dtype: ScalarType.Int64), 2, 6, torch.CPU).Mask);   // after a cache: kept
        // The model's output is the same with the mask of ones and without a mask.
        using var model = TestModels.RandomCausal(TestModels.Llama(kvHeads: 2));
        var ids = torch.randint(0, TestModels.Vocab, [3, 6], generator: new Generator(4), dtype: ScalarType.Int64);
        using var noGrad = torch.no_grad();
        Assert.True(TestModels.MaxDiff(model.Forward(ids), model.Forward(ids, ones)) < 1e-6);
    }

    [Fact]
    public void A_forward_without_gradients_keeps_nothing_for_backward_and_gives_the_same_output()
    {
        if (!CpuKernels.IsSupported) return;
        using var scope = NewDisposeScope();
        var gen = new Generator(3);
        var q = torch.randn([2, 2, 40, 16], generator: gen);
        var k = torch.randn([2, 2, 40, 16], generator: gen);
        var v = torch.randn([2, 2, 40, 16], generator: gen);
        Tensor y;
        using (torch.no_grad()) y = AttentionFunction.Apply(q, k, v, null, true);
        Assert.False(y.requires_grad);
        var reference = F.scaled_dot_product_attention(q, k, v, is_casual: true).transpose(1, 2);
        Assert.True(TestModels.MaxRel(y, reference) < 2e-5);
    }

    [Fact]
    public void Shapes_the_kernels_do_not_take_are_left_to_libtorch()
    {
        using var scope = NewDisposeScope();
        var q = torch.randn([1, 2, 8, 16]);
        Assert.False(AttentionFunction.Covers(q, torch.randn([1, 2, 9, 16]), torch.randn([1, 2, 9, 16]), null));   // keys != queries (a cache)
        Assert.False(AttentionFunction.Covers(torch.randn([1, 2, 8, 12]), torch.randn([1, 2, 8, 12]), torch.randn([1, 2, 8, 12]), null));   // hs not a multiple of 16
        Assert.False(AttentionFunction.Covers(q, torch.randn([1, 3, 8, 16]), torch.randn([1, 3, 8, 16]), null));   // 2 heads over 3 kv heads
        Assert.False(AttentionFunction.Covers(q.to(ScalarType.Float64), torch.randn([1, 2, 8, 16], dtype: ScalarType.Float64), torch.randn([1, 2, 8, 16], dtype: ScalarType.Float64), null));
        Assert.False(AttentionFunction.Covers(q, q, q, torch.ones([1, 1, 8, 8])));   // a float mask
        Assert.False(AttentionFunction.Covers(torch.randn([1, 2, 16, 8]).transpose(2, 3), q, q, null));   // head dimension not contiguous
        // Packed q/k/v with rotary tables: the head size must pair vectors half a head apart, the tables must be fp32.
        var cos = torch.randn([1, 8, 32]);
        Assert.True(AttentionFunction.CoversPacked(torch.randn([1, 8, 4, 32]), 2, 1, cos, cos, null));
        Assert.False(AttentionFunction.CoversPacked(torch.randn([1, 8, 4, 16]), 2, 1, torch.randn([1, 8, 16]), torch.randn([1, 8, 16]), null));
        Assert.False(AttentionFunction.CoversPacked(torch.randn([1, 8, 4, 32]), 2, 1, cos.to(ScalarType.BFloat16), cos, null));
        Assert.False(AttentionFunction.CoversPacked(torch.randn([1, 8, 5, 32]), 2, 1, cos, cos, null));   // not nh + 2 kvh heads
        Assert.False(AttentionFunction.CoversPacked(torch.randn([1, 8, 4, 32]), 2, 1, torch.randn([1, 7, 32]), torch.randn([1, 7, 32]), null));
    }
}
