using System.Diagnostics;
using System.Globalization;
using RlhfStudio.Bench.Workloads;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Bench;

/// <summary>--profile: where the time of a training step (tiny and 25M) and of a decode step goes. TorchSharp has no
/// autograd profiler, so every piece is timed on its own with a Stopwatch on the shapes the step uses (forward, and
/// forward+backward with a random upstream gradient); the whole step is timed next to the sum of its parts. Figures
/// are milliseconds per call, best of several rounds.</summary>
public static class Profile
{
    private static readonly List<string[]> Rows = [];

    /// <param name="filter">Only the parts whose "training-tiny-bf16" / "decode-25M-fp32" label contains this.</param>
    public static int Run(string? filter)
    {
        Console.WriteLine($"profile (load {Machine.LoadAverage()}); ms per call, best of {Rounds} rounds");
        foreach (var config in BenchConfig.All)
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            {
                if (filter is null || $"training-{config.Name}-{DTypes.Name(dtype)}".Contains(filter, StringComparison.Ordinal)) Training(config, dtype);
                if (filter is null || $"decode-{config.Name}-{DTypes.Name(dtype)}".Contains(filter, StringComparison.Ordinal)) Decode(config, dtype);
            }
        Report.PrintMarkdown(Console.Out, ["what", "config", "dtype", "ms", "x per step", "ms per step"], Rows);
        Console.WriteLine($"load average after: {Machine.LoadAverage()}");
        return 0;
    }

    private const int Rounds = 3;

    private static double Time(Action work, int calls = 2, int rounds = Rounds)
    {
        work();
        double best = double.MaxValue;
        for (int r = 0; r < rounds; r++)
        {
            GC.Collect(0);
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < calls; i++) work();
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds / calls);
        }
        return best;
    }

    private static void Add(string what, BenchConfig config, ScalarType dtype, double ms, int perStep = 1) =>
        Rows.Add([what, config.Name, DTypes.Name(dtype), ms.ToString("F3", CultureInfo.InvariantCulture), perStep.ToString(CultureInfo.InvariantCulture),
            (ms * perStep).ToString("F2", CultureInfo.InvariantCulture)]);

    /// <summary>Forward and forward+backward of <paramref name="f"/> on a fresh leaf input.</summary>
    private static (double Forward, double Both) FwdBwd(Func<Tensor, Tensor> f, Tensor input)
    {
        double fwd = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); f(input); });
        double both = Time(() =>
        {
            using var s = NewDisposeScope();
            var x = input.detach().requires_grad_(true);
            var y = f(x);
            y.backward([torch.ones_like(y)]);
        });
        return (fwd, both);
    }

    private static void Training(BenchConfig config, ScalarType dtype)
    {
        Console.Error.WriteLine($"training {config.Name} {DTypes.Name(dtype)} ...");
        using var model = config.CreateModel(dtype);
        var c = model.Config;
        int layersCount = c.NumHiddenLayers;
        long b = config.Batch, t = config.SequenceLength;
        using (var trainer = new TrainingStep.Trainer(model, TrainingStep.Trainer.RandomBatches(config, 11, 2)))
            Add("whole step (fwd+bwd+AdamW)", config, dtype, Time(trainer.Step, calls: 2));

        Add("  its matmuls alone (fwd+bwd GEMMs of every layer and the head, same shapes and dtype)", config, dtype, MatmulFloor(c, b * t, t, dtype));

        var layer = ((LlamaModel)model.Trunk).layers[0];
        var act = dtype;
        using var x = torch.randn([b, t, c.HiddenSize]).to(act);
        using var invFreq = Rotary.InverseFrequencies(c.HeadDim, c.RopeTheta, null);
        using var positions = torch.arange(t).unsqueeze(0).expand(b, t);
        var (cos, sin) = Rotary.CosSin(invFreq, positions, act);
        using var cosD = cos.DetachFromDisposeScope();
        using var sinD = sin.DetachFromDisposeScope();

        var norm = FwdBwd(h => layer.input_layernorm.forward(h), x);
        Add("  RMSNorm fwd", config, dtype, norm.Forward, 2 * layersCount + 1);
        Add("  RMSNorm fwd+bwd", config, dtype, norm.Both, 2 * layersCount + 1);
        var attn = FwdBwd(h => layer.self_attn.Forward(h, cosD, sinD, null, true, null, 0), x);
        Add("  attention block fwd", config, dtype, attn.Forward, layersCount);
        Add("  attention block fwd+bwd", config, dtype, attn.Both, layersCount);
        var mlp = FwdBwd(h => layer.mlp.forward(h), x);
        Add("  MLP block fwd", config, dtype, mlp.Forward, layersCount);
        Add("  MLP block fwd+bwd", config, dtype, mlp.Both, layersCount);
        var whole = FwdBwd(h => layer.Forward(h, cosD, sinD, null, true, null, 0), x);
        Add("  decoder layer fwd+bwd", config, dtype, whole.Both, layersCount);

        // Pieces of the attention block.
        var q = layer.self_attn.q_proj;
        var proj = FwdBwd(h => q.forward(h), x);
        Add("    one h->h projection fwd+bwd", config, dtype, proj.Both, 4 * layersCount);
        using var qh = torch.randn([b, c.NumAttentionHeads, t, c.HeadDim]).to(act);
        var rope = FwdBwd(h => Rotary.Apply(h, cosD, sinD), qh);
        Add("    rotary apply fwd+bwd", config, dtype, rope.Both, 2 * layersCount);
        var sdpa = FwdBwd(h => F.scaled_dot_product_attention(h, qh, qh, is_casual: true), qh);
        Add("    SDPA causal fwd+bwd (grad q only)", config, dtype, sdpa.Both, layersCount);
        Add("    rotary cos/sin tables", config, dtype, Time(() => { using var s = NewDisposeScope(); Rotary.CosSin(invFreq, positions, act); }), 1);
        if (dtype != ScalarType.Float32)
            Add("    cast one h x h fp32 weight to bf16", config, dtype, Time(() => { using var s = NewDisposeScope(); q.weight.to(dtype); }), 7 * layersCount);

        // Head, loss and optimiser.
        using var hidden = torch.randn([b, t, c.HiddenSize]).to(act);
        using var targets = torch.randint(0, c.VocabSize, [b * t], dtype: ScalarType.Int64);
        var head = FwdBwd(h => F.cross_entropy(model.Logits(h).view(-1, c.VocabSize).to(ScalarType.Float32), targets), hidden);
        Add("  LM head + cross-entropy fwd", config, dtype, head.Forward);
        Add("  LM head + cross-entropy fwd+bwd", config, dtype, head.Both);
        using var targets2d = targets.view(b, t);
        var fused = FwdBwd(h => model.TokenLossSum(h, targets2d, new TokenLossStats()).div(b * t), hidden);
        Add("  the same through TokenLossSum (LinearCrossEntropy), fwd+bwd", config, dtype, fused.Both);
        using var ids = torch.randint(0, c.VocabSize, [b, t], dtype: ScalarType.Int64);
        Add("  trunk forward (no grad)", config, dtype, Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); model.Hidden(ids); }, calls: 2));
        Add("  model forward+backward (no optimiser)", config, dtype, Time(() =>
        {
            using var s = NewDisposeScope();
            var logits = model.Forward(ids);
            F.cross_entropy(logits.view(-1, c.VocabSize).to(ScalarType.Float32), targets).backward();
            foreach (var p in model.parameters()) { using var g = p.grad; p.grad = null; }
        }, calls: 2));
        var parameters = ParameterGroups.Trainable(model);
        using var optimizer = new AdamWOptimizer(parameters, weightDecay: 0.1);
        foreach (var p in parameters) p.Parameter.grad = torch.randn_like(p.Parameter).DetachFromDisposeScope();
        Add("  AdamW step", config, dtype, Time(() => optimizer.Step(1e-4)));
    }

    /// <summary>The floor libtorch's GEMMs set for a training step: every matmul of the forward and backward (per linear
    /// layer Y = X W^T, then dX = dY W and dW = dY^T X; per attention S = Q K^T and O = P V with their two gradients each;
    /// the LM head likewise) run back to back through torch.mm / bmm in the step's dtype and shapes, transposes as views
    /// as autograd passes them. No elementwise op: what a step costs if everything else were free.</summary>
    private static double MatmulFloor(ModelConfig c, long n, long t, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long hidden = c.HiddenSize, heads = c.NumAttentionHeads, hs = c.HeadDim, kv = c.NumKeyValueHeads, inter = c.IntermediateSize;
        var linears = new List<(long In, long Out)> { (hidden, (heads + 2 * kv) * hs), (heads * hs, hidden), (hidden, 2 * inter), (inter, hidden) };
        var operands = linears.Select(l => (X: torch.randn([n, l.In]).to(dtype), W: torch.randn([l.Out, l.In]).to(dtype), dY: torch.randn([n, l.Out]).to(dtype))).ToList();
        long bh = n / t * heads;
        var q = torch.randn([bh, t, hs]).to(dtype);
        var p = torch.randn([bh, t, t]).to(dtype);
        var head = (X: torch.randn([n, hidden]).to(dtype), W: torch.randn([c.VocabSize, hidden]).to(dtype), dY: torch.randn([n, c.VocabSize]).to(dtype));
        void Linear((Tensor X, Tensor W, Tensor dY) o)
        {
            using var y = torch.mm(o.X, o.W.t());
            using var dx = torch.mm(o.dY, o.W);
            using var dw = torch.mm(o.dY.t(), o.X);
        }
        return Time(() =>
        {
            for (int layer = 0; layer < c.NumHiddenLayers; layer++)
            {
                foreach (var o in operands) Linear(o);
                using var kt = q.transpose(1, 2);
                using var scores = torch.bmm(q, kt);             // S = Q K^T
                using var output = torch.bmm(p, q);              // O = P V
                using var dq = torch.bmm(p, q);                  // dQ = dS K
                using var dk = torch.bmm(p.transpose(1, 2), q);  // dK = dS^T Q
                using var dp = torch.bmm(q, kt);                 // dP = dO V^T
                using var dv = torch.bmm(p.transpose(1, 2), q);  // dV = P^T dO
            }
            Linear(head);
        }, calls: 2);
    }

    private static void Decode(BenchConfig config, ScalarType dtype)
    {
        Console.Error.WriteLine($"decode {config.Name} {DTypes.Name(dtype)} ...");
        const int Batch = Generate.Batch, Context = 96, Calls = 32;
        using var model = config.CreateModel(dtype);
        var c = model.Config;
        using var noGrad = no_grad();
        // As generation runs: compute-dtype (and fused q/k/v, gate/up) weight copies made once, not cast every call.
        using var inferenceWeights = model.UseInferenceWeights();
        var gen = new torch.Generator(5);
        using var prompt = torch.randint(0, c.VocabSize, [Batch, Context], generator: gen, dtype: ScalarType.Int64);
        using var token = torch.randint(0, c.VocabSize, [Batch, 1], generator: gen, dtype: ScalarType.Int64);
        double PerCall(Action call) => Time(() => { for (int i = 0; i < Calls; i++) call(); }, calls: 1) / Calls;
        using (var cache = model.NewCache(Batch, Context + Calls * 8 + 1))
        {
            using (var s = NewDisposeScope()) model.Hidden(prompt, cache: cache);
            using var positions = torch.full([Batch, 1], Context, dtype: ScalarType.Int64);
            Add("decode: trunk, 1 token", config, dtype, PerCall(() => { using var s = NewDisposeScope(); model.Hidden(token, null, positions, cache); }), Generate.NewTokens);
        }
        var layer = ((LlamaModel)model.Trunk).layers[0];
        using (var cache = model.NewCache(Batch, Context + Calls * 8 + 1))
        {
            using (var s = NewDisposeScope()) model.Hidden(prompt, cache: cache);
            using var x = torch.randn([Batch, 1, c.HiddenSize]).to(dtype);
            using var pos = torch.full([Batch, 1], Context, dtype: ScalarType.Int64);
            using var invFreq = Rotary.InverseFrequencies(c.HeadDim, c.RopeTheta, null);
            var (cos, sin) = Rotary.CosSin(invFreq, pos, dtype);
            Add("decode:   attention block, no cache", config, dtype, PerCall(() => { using var s = NewDisposeScope(); layer.self_attn.Forward(x, cos, sin, null, false, null, 0); }), Generate.NewTokens * c.NumHiddenLayers);
            // The cache is not advanced by a lone layer: every call attends over the prompt plus one position.
            Add($"decode:   attention block, {Context + 1} cached", config, dtype, PerCall(() => { using var s = NewDisposeScope(); layer.self_attn.Forward(x, cos, sin, null, false, cache, 0); }), Generate.NewTokens * c.NumHiddenLayers);
            Add("decode:   MLP block", config, dtype, PerCall(() => { using var s = NewDisposeScope(); layer.mlp.forward(x); }), Generate.NewTokens * c.NumHiddenLayers);
            Add("decode:   RMSNorm", config, dtype, PerCall(() => { using var s = NewDisposeScope(); layer.input_layernorm.forward(x); }), Generate.NewTokens * (2 * c.NumHiddenLayers + 1));
            Add("decode:   rotary cos/sin", config, dtype, PerCall(() => { using var s = NewDisposeScope(); Rotary.CosSin(invFreq, pos, dtype); }), Generate.NewTokens);
            // In the cache's dtype, as a decode step attends (fp32 under bf16 compute: see CausalLanguageModel.NewCache).
            using var q = torch.randn([Batch, c.NumAttentionHeads, 1, c.HeadDim]).to(cache.Dtype);
            using var k = torch.randn([Batch, c.NumAttentionHeads, Context, c.HeadDim]).to(cache.Dtype);
            Add("decode:   SDPA alone", config, dtype, PerCall(() => { using var s = NewDisposeScope(); F.scaled_dot_product_attention(q, k, k); }), Generate.NewTokens * c.NumHiddenLayers);
            cos.Dispose();
            sin.Dispose();
        }
        using var hidden = torch.randn([Batch, 1, c.HiddenSize]).to(dtype);
        Add("decode: LM head", config, dtype, PerCall(() => { using var s = NewDisposeScope(); model.Logits(hidden).to(ScalarType.Float32); }), Generate.NewTokens);
        using var logits = torch.randn([Batch, c.VocabSize]);
        Add("decode: sample (softmax + inverse CDF)", config, dtype, PerCall(() => { using var s = NewDisposeScope(); Sampling.Draw(logits.softmax(-1), gen); }), Generate.NewTokens);
        var settings = new GenerationSettings { MaxNewTokens = Generate.NewTokens, Temperature = 1.0, EosTokenIds = [], PadTokenId = 0, Seed = 1 };
        using var ids = torch.randint(0, c.VocabSize, [Batch, Generate.PromptLength], generator: gen, dtype: ScalarType.Int64);
        Add("generate 8x(32+128), whole, libtorch ops", config, dtype, Time(() => { using var r = TextGenerator.Generate(model, ids, null, settings with { FusedCpuDecode = false }); }, calls: 1));
        Add("generate 8x(32+128), whole, fused CPU decode (default)", config, dtype, Time(() => { using var r = TextGenerator.Generate(model, ids, null, settings); }, calls: 1));
    }
}
