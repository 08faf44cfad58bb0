using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Where a decode step's time goes (batch 8, context about 100): the pieces of one step timed on their own
/// (trunk, one layer's attention and MLP, LM head, sampling), next to whole generations with and without left padding.
/// Run with --profile; figures are milliseconds per step (or per call), lower is better.</summary>
public sealed class GenerationProfile : IWorkload
{
    private const int Batch = Generate.Batch, Context = 96, Calls = 32;
    public string Name => "generation profile";

    public IEnumerable<Measurement> Run(BenchContext context)
    {
        foreach (var dtype in BenchContext.DTypes)
        {
            string name = BenchContext.Name(dtype);
            using var model = BenchContext.CreateModel(dtype);
            var results = new List<Measurement>();
            using var noGrad = torch.no_grad();
            var gen = new torch.Generator(5);
            using var prompt = torch.randint(0, BenchContext.Vocab, [Batch, Context], generator: gen, dtype: ScalarType.Int64);
            using var token = torch.randint(0, BenchContext.Vocab, [Batch, 1], generator: gen, dtype: ScalarType.Int64);
            int reps = context.Repetitions + 2;

            Measurement PerCall(string what, Action call, int calls = Calls) =>
                Timing.Rate($"  {what}", name, "calls/s", calls, Timing.Seconds(() => { for (int i = 0; i < calls; i++) call(); }, 1, reps))
                    is var m ? m with { MillisecondsPerIteration = m.MillisecondsPerIteration / calls } : throw new InvalidOperationException();

            // The whole trunk for one new token, the cache filled to Context (it grows by one per call; the room is there).
            using (var cache = model.NewCache(Batch, Context + Calls * (reps + 2) + 1))
            {
                using (var s = NewDisposeScope()) model.Hidden(prompt, cache: cache);
                var positions = torch.full([Batch, 1], Context, dtype: ScalarType.Int64).DetachFromDisposeScope();
                results.Add(PerCall("trunk, 1 token (8 layers)", () => { using var s = NewDisposeScope(); model.Hidden(token, null, positions, cache); }));
                positions.Dispose();
            }

            // One layer's halves on (B, 1, hidden) input, with a cache of their own.
            var layer = ((LlamaModel)model.Trunk).layers[0];
            using (var cache = model.NewCache(Batch, Context + Calls * (reps + 2) + 1))
            {
                using (var s = NewDisposeScope()) model.Hidden(prompt, cache: cache);
                using var x = torch.randn([Batch, 1, model.Config.HiddenSize]).to(dtype);
                using var pos = torch.full([Batch, 1], Context, dtype: ScalarType.Int64);
                using var invFreq = Rotary.InverseFrequencies(model.Config.HeadDim, model.Config.RopeTheta, null);
                var (cos, sin) = Rotary.CosSin(invFreq, pos, dtype);
                results.Add(PerCall("  one layer: attention block", () => { using var s = NewDisposeScope(); layer.self_attn.Forward(x, cos, sin, null, false, null, 0); }));
                results.Add(PerCall("  one layer: MLP block", () => { using var s = NewDisposeScope(); layer.mlp.forward(x); }));
                results.Add(PerCall("  one layer: RMSNorm", () => { using var s = NewDisposeScope(); layer.input_layernorm.forward(x); }));
                results.Add(PerCall("  rotary cos/sin", () => { using var s = NewDisposeScope(); Rotary.CosSin(invFreq, pos, dtype); }));
                using var q = torch.randn([Batch, model.Config.NumAttentionHeads, 1, model.Config.HeadDim]).to(dtype);
                using var k = torch.randn([Batch, model.Config.NumAttentionHeads, Context, model.Config.HeadDim]).to(dtype);
                using var boolMask = torch.ones([Batch, 1, 1, Context], dtype: ScalarType.Bool);
                results.Add(PerCall("  SDPA alone, no mask", () => { using var s = NewDisposeScope(); F.scaled_dot_product_attention(q, k, k); }));
                results.Add(PerCall("  SDPA alone, bool mask", () => { using var s = NewDisposeScope(); F.scaled_dot_product_attention(q, k, k, boolMask); }));
                cos.Dispose();
                sin.Dispose();
            }

            using var hidden = torch.randn([Batch, 1, model.Config.HiddenSize]).to(dtype);
            results.Add(PerCall("LM head (tied, 8192)", () => { using var s = NewDisposeScope(); model.Logits(hidden).to(ScalarType.Float32); }));
            using var logits = torch.randn([Batch, BenchContext.Vocab]);
            results.Add(PerCall("sample: softmax + multinomial", () => { using var s = NewDisposeScope(); logits.softmax(-1).multinomial(1, generator: gen); }));
            results.Add(PerCall("sample: top-k 50 + top-p 0.9", () => { using var s = NewDisposeScope(); LogitsWarpers.Warp(logits, 0.7, 50, 0.9).softmax(-1).multinomial(1, generator: gen); }));
            results.Add(PerCall("greedy argmax", () => { using var s = NewDisposeScope(); logits.argmax(-1); }));

            // Whole generations: ms per step, unpadded vs one row left-padded by one token (masked decode path).
            var settings = new GenerationSettings { MaxNewTokens = 64, Temperature = 1.0, EosTokenIds = [], PadTokenId = 0, Seed = 1 };
            using var mask = torch.ones([Batch, Context], dtype: ScalarType.Int64);
            mask[0, 0] = 0;
            foreach (var (label, m) in new[] { ("generate 64, no padding", (Tensor?)null), ("generate 64, left padded", mask) })
            {
                var seconds = Timing.Seconds(() => { using var r = TextGenerator.Generate(model, prompt, m, settings); }, 1, Math.Max(2, context.Repetitions - 2));
                results.Add(Timing.Rate(label, name, "steps/s", settings.MaxNewTokens, seconds));
            }
            var prefillSeconds = Timing.Seconds(() => { using var s = NewDisposeScope(); using var c = model.NewCache(Batch, Context); model.Hidden(prompt, cache: c); }, 1, reps);
            results.Add(Timing.Rate($"prefill {Batch}x{Context} (trunk)", name, "calls/s", 1, prefillSeconds));
            foreach (var r in results) yield return r;
        }
    }
}
