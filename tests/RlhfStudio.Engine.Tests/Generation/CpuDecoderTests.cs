using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Generation.GenerationReference;

namespace RlhfStudio.Engine.Tests.Generation;

/// <summary>The fused CPU decoder against libtorch: the same model, prompts and settings decoded both ways
/// (<see cref="GenerationSettings.FusedCpuDecode"/> on and off) and against an uncached forward.</summary>
public class CpuDecoderTests
{
    private const long Pad = 0;
    private static readonly GenerationSettings Greedy = new() { Temperature = 0, MaxNewTokens = 10, EosTokenIds = [], PadTokenId = Pad, ReturnLogProbs = true };

    private static CausalLanguageModel Make(string modelType = "llama", bool tied = false, int kvHeads = 2, ScalarType dtype = ScalarType.Float32) =>
        TestModels.RandomCausal(TestModels.Llama(modelType, tied, kvHeads, layers: 2, hidden: 64), seed: 5, dtype: dtype);

    /// <summary>Whether <paramref name="model"/> decodes through the fused kernels on this machine (false without AVX-512).</summary>
    private static bool Fused(CausalLanguageModel model)
    {
        using var noGrad = torch.no_grad();
        using var weights = model.UseInferenceWeights();
        using var decoder = CpuDecoder.TryCreate(model, out var reason);
        Assert.Equal(decoder is null, reason is not null);
        return decoder is not null;
    }

    [Theory]
    [InlineData("llama", false, 2)]    // grouped-query attention
    [InlineData("llama", true, 4)]     // tied head, multi-head
    [InlineData("qwen2", false, 1)]    // q/k/v biases, one kv head
    [InlineData("mistral", false, 2)]
    public void Fused_decoding_gives_libtorchs_tokens_and_logprobs_for_a_left_padded_batch(string modelType, bool tied, int kvHeads)
    {
        using var model = Make(modelType, tied, kvHeads);
        Assert.Equal(CpuKernels.IsSupported, Fused(model));
        var prompts = Prompts();
        using var fused = Run(model, prompts, Greedy);
        using var reference = Run(model, prompts, Greedy with { FusedCpuDecode = false });
        Assert.Equal(CpuKernels.IsSupported ? TextGenerator.FusedDecoderName : "libtorch ops (this CPU has no 512-bit vectors (AVX-512))", fused.Decoder);
        Assert.Equal("libtorch ops (fused decode off)", reference.Decoder);
        Assert.Equal(Rows(reference.ResponseIds), Rows(fused.ResponseIds));
        Assert.True(TestModels.MaxDiff(reference.LogProbs!, fused.LogProbs!) < 1e-4, $"max diff {TestModels.MaxDiff(reference.LogProbs!, fused.LogProbs!)}");
        // And against the uncached forward over the whole sequence.
        Assert.Equal(GreedyWithoutCache(model, prompts, Greedy.MaxNewTokens, Pad), Rows(fused.ResponseIds));
    }

    [Fact]
    public void Each_step_writes_the_cache_and_its_logits_equal_an_uncached_forward()
    {
        if (!CpuKernels.IsSupported) return;   // covered by the theory above: no decoder is made
        using var model = Make(kvHeads: 2);
        using var noGrad = torch.no_grad();
        using var weights = model.UseInferenceWeights();
        long[][] sequences = [[7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24, 25]];
        using var ids = TestModels.Ids(sequences);
        using var decoder = CpuDecoder.TryCreate(model, out _)!;
        using var cache = model.NewCache(2, 6, decoder.CacheDType);
        using (var prefill = model.Hidden(ids.narrow(1, 0, 3), null, null, cache)) { }
        Assert.True(decoder.TryBind(cache, [0, 0], out _));
        Assert.Throws<InvalidOperationException>(() => decoder.TryBind(cache, [0, 0], out _));
        for (int t = 3; t < 6; t++)
        {
            using var logits = decoder.Step([sequences[0][t], sequences[1][t]], [t, t], wantHidden: false, out _);
            Assert.Equal(t + 1, cache.Length);
            using var full = model.Forward(ids.narrow(1, 0, t + 1));
            using var last = full.select(1, t);
            Assert.True(TestModels.MaxDiff(last, logits) < 1e-4, $"step {t}: max diff {TestModels.MaxDiff(last, logits)}");
        }
        var error = Assert.Throws<ArgumentException>(() => decoder.Step([1, 2], [6, 6], false, out _));
        Assert.Contains("do not fit", error.Message);
        Assert.Throws<ArgumentException>(() => decoder.Step([TestModels.Vocab, 2], [5, 5], false, out _));
    }

    [Fact]
    public void Under_bf16_compute_fused_logprobs_stay_within_bf16_rounding_of_libtorchs()
    {
        using var model = Make(kvHeads: 2);
        model.ComputeDType = ScalarType.BFloat16;
        Assert.Equal(CpuKernels.IsSupported, Fused(model));
        var prompts = Prompts();
        using var fused = Run(model, prompts, Greedy);
        using var reference = Run(model, prompts, Greedy with { FusedCpuDecode = false });
        Assert.Equal(Rows(reference.ResponseIds).Select(r => r[0]), Rows(fused.ResponseIds).Select(r => r[0]));   // from the shared prefill
        // Each path's log-probs against the fp32 model's on its own tokens: bf16 weights with fp32 activations (fused)
        // are nearer than with bf16 activations (libtorch, as autocast).
        model.ComputeDType = null;
        var mask = LeftPad(prompts, 7, Pad).Mask;
        using var fusedExact = LogProbsOf(model, fused.Sequences, mask, fused.PromptLength, 1.0);
        using var referenceExact = LogProbsOf(model, reference.Sequences, mask, reference.PromptLength, 1.0);
        double fusedError = MeanAbs(fused.LogProbs!, fusedExact), referenceError = MeanAbs(reference.LogProbs!, referenceExact);
        Assert.True(fusedError < 0.02 && fusedError < referenceError, $"mean error fused {fusedError:G3}, libtorch bf16 {referenceError:G3}");
    }

    private static double MeanAbs(Tensor a, Tensor b)
    {
        using var diff = (a - b).abs().mean();
        return diff.item<float>();
    }

    [Fact]
    public void A_readout_of_the_final_hidden_state_matches_libtorchs()
    {
        using var model = Make(kvHeads: 2);
        using var head = new Projection(64, 1, hasBias: true, ScalarType.Float32, null);
        Func<Tensor, Tensor> readout = h => head.forward(h).squeeze(-1);
        var sample = Greedy with { Temperature = 1.0, Seed = 4 };
        using var fused = Run(model, Prompts(), sample, readout: readout);
        using var reference = Run(model, Prompts(), sample with { FusedCpuDecode = false }, readout: readout);
        Assert.Equal(Rows(reference.ResponseIds), Rows(fused.ResponseIds));
        Assert.True(TestModels.MaxDiff(reference.Readouts!, fused.Readouts!) < 1e-4, $"max diff {TestModels.MaxDiff(reference.Readouts!, fused.Readouts!)}");
    }

    [Theory]
    [InlineData(2, false)]    // rank padded to 16 inside the decoder
    [InlineData(16, true)]    // every projection and the LM head, bf16 compute
    public void Active_lora_adapters_decode_as_libtorch_applies_them(int rank, bool bf16)
    {
        using var model = Make(kvHeads: 2);
        Lora.Apply(model, new LoraConfig { Rank = rank, Alpha = 2 * rank, Dropout = 0.1,
            TargetModules = bf16 ? ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"] : ["q_proj", "v_proj", "down_proj"] }, seed: 3);
        using (torch.no_grad())
            foreach (var (name, p) in model.named_parameters().Where(p => p.name.Contains("lora_B")))
                p.copy_(torch.randn(p.shape, generator: new torch.Generator(9)) * 0.3);   // B starts at zero: make the adapters matter
        if (bf16) model.ComputeDType = ScalarType.BFloat16;
        model.eval();   // no dropout, as in rollouts
        Assert.Equal(CpuKernels.IsSupported, Fused(model));
        using var fused = Run(model, Prompts(), Greedy);
        using var reference = Run(model, Prompts(), Greedy with { FusedCpuDecode = false });
        if (bf16)
        {
            Assert.Equal(Rows(reference.ResponseIds).Select(r => r[0]), Rows(fused.ResponseIds).Select(r => r[0]));
            return;   // bf16 activations on the libtorch path: agreement within rounding is checked without adapters above
        }
        Assert.Equal(Rows(reference.ResponseIds), Rows(fused.ResponseIds));
        Assert.True(TestModels.MaxDiff(reference.LogProbs!, fused.LogProbs!) < 1e-4, $"max diff {TestModels.MaxDiff(reference.LogProbs!, fused.LogProbs!)}");
        // Training mode: LoRA dropout would act on the libtorch path, so the decoder stands aside.
        model.train();
        Assert.False(Fused(model));
    }

    [Fact]
    public void Models_the_kernels_do_not_cover_decode_on_libtorch()
    {
        using var narrowHeads = TestModels.RandomCausal(TestModels.Llama(hidden: 32), seed: 5);   // 8-wide heads
        Assert.False(Fused(narrowHeads));
        using var gpt2 = TestModels.RandomCausal(TestModels.Gpt2(), seed: 5);
        Assert.False(Fused(gpt2));
        // They still generate, and say why libtorch ran the steps.
        using var result = Run(narrowHeads, Prompts(), Greedy);
        Assert.Equal(Greedy.MaxNewTokens, result.ResponseIds.shape[1]);
        if (CpuKernels.IsSupported) Assert.Equal("libtorch ops (hidden size, intermediate size and head size must be multiples of 16)", result.Decoder);
        using var gpt2Result = Run(gpt2, Prompts(), Greedy);
        if (CpuKernels.IsSupported) Assert.Equal("libtorch ops (gpt2 is not a Llama-family model)", gpt2Result.Decoder);
    }

    [Fact]
    public void Bf16_cache_rows_round_as_torch_does()
    {
        var gen = new torch.Generator(3);
        using var values = torch.randn([4096], generator: gen) * 3;
        var floats = values.data<float>().ToArray()
            .Concat([1.00390625f, 1.01171875f, -1.00390625f, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, 3.4e38f, 1e-40f]).ToArray();
        using var source = torch.tensor(floats);
        using var rounded = source.to(ScalarType.BFloat16);
        using var widened = rounded.to(ScalarType.Float32);
        // bf16 -> fp32 is exact, so the fp32 bits' high half are the bf16 bits.
        var expected = widened.data<float>().ToArray().Select(f => (ushort)(BitConverter.SingleToUInt32Bits(f) >> 16)).ToArray();
        Assert.Equal(expected, floats.Select(CpuKernels.ToBf16).ToArray());
    }
}
