// One-token decode steps of a Llama-family model (Llama, Mistral, Qwen2; LoRA adapters applied unmerged) on the CPU as
// managed SIMD kernels (CpuKernels) instead of ~180 libtorch ops. Profile that motivated it (tiny preset, bf16, batch 8): a libtorch decode
// step took ~2.4 ms for ~11 MFLOP per token: dispatch of small ops and OpenMP barriers, not arithmetic (one and two
// threads decoded at the same speed). The kernels read the same weights in place (the inference copies of the
// model's inference-weights scope, or the parameters), write the same KvCache, and return fp32 logits; the prompt's
// prefill, sampling and bookkeeping stay with TextGenerator and libtorch.
//
// Numerics: activations stay fp32 throughout (the libtorch path under a bf16 compute dtype rounds them to bf16 before
// every matmul), weights are used in their matmul dtype (bf16 copies under bf16 compute) and the KV cache holds bf16
// under bf16 compute (what the libtorch path's keys and values are), so logits agree with the libtorch path to fp32
// rounding for fp32 models and are closer to the fp32 model than the bf16 path under bf16 (tested).
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Generation;

internal sealed unsafe class CpuDecoder : IDisposable
{
    /// <summary>A block of weight rows writing output columns [Offset, Offset + W.Rows).</summary>
    private readonly record struct Block(WeightMatrix W, int Offset);

    /// <summary>A LoRA adapter adding B (A x) to output columns [Offset, Offset + B.Rows): A [r16, in] and B [out, r16] in
    /// fp32, the rank padded with zeros to a multiple of 16 and the scaling folded into B.</summary>
    private readonly record struct LowRank(WeightMatrix A, WeightMatrix B, int Offset);

    /// <summary>One or more projections of the same input (q/k/v, gate/up, or one): weight blocks plus adapters.</summary>
    private sealed class Linear(Block[] blocks, LowRank[] adapters)
    {
        public readonly Block[] Blocks = blocks;
        public readonly LowRank[] Adapters = adapters;
    }

    private sealed class LayerWeights(Linear qkv, Linear o, Linear gateUp, Linear down, IntPtr inputNorm, IntPtr postNorm)
    {
        public readonly Linear Qkv = qkv, O = o, GateUp = gateUp, Down = down;
        public readonly float* InputNorm = (float*)inputNorm, PostNorm = (float*)postNorm;
    }

    private readonly CausalLanguageModel _model;
    private readonly LayerWeights[] _layers;
    private readonly Linear _head;
    private readonly int _maxRank;
    private readonly void* _embedding;
    private readonly bool _embeddingBf16;
    private readonly float* _finalNorm;
    private readonly int _hidden, _heads, _kvHeads, _headDim, _intermediate, _vocab, _qkvWidth;
    private readonly float _eps, _scale;
    private readonly WorkerTeam _team;
    private readonly List<IntPtr> _allocations = [];
    private readonly Action<int> _matMulJob, _gateUpJob, _attentionJob, _logSumExpJob;

    // Set by Bind: the cache (per layer [B, kvH, MaxLength, hs], fp32 or bf16), rotary tables and activations (fp32,
    // row-major by batch row: residual stream, normed input, q/k/v, attention output, gate/up, MLP input, scores).
    private KvCache? _cache;
    private byte*[] _keys = [], _values = [];
    private bool _cacheBf16;
    private int[] _first = [];
    private int _batch;
    private long _maxLength;
    private float* _cos, _sinSigned, _x, _h, _qkv, _attn, _gateUp, _act, _scores, _lowRank;

    // Arguments of the running parallel section.
    private WeightMatrix _jobWeights;
    private float* _jobInput, _jobOutput;
    private int _jobLdy, _jobLayer, _jobPosition;
    private bool _jobAccumulate;
    private float* _jobLogits;
    private float _jobDivisor;
    private (float Max, float Sum)[] _logSumExpParts = [];

    private CpuDecoder(CausalLanguageModel model, LayerWeights[] layers, Linear head, List<IntPtr> allocations, int threads)
    {
        var c = model.Config;
        _model = model;
        _layers = layers;
        _head = head;
        _maxRank = layers.SelectMany(l => new[] { l.Qkv, l.O, l.GateUp, l.Down }).Append(head).SelectMany(l => l.Adapters).Select(a => a.A.Rows).DefaultIfEmpty(0).Max();
        _allocations.AddRange(allocations);
        _hidden = c.HiddenSize;
        _heads = c.NumAttentionHeads;
        _kvHeads = c.NumKeyValueHeads;
        _headDim = c.HeadDim;
        _intermediate = c.IntermediateSize;
        _vocab = c.VocabSize;
        _qkvWidth = (_heads + 2 * _kvHeads) * _headDim;
        _eps = (float)c.NormEps;
        _scale = 1f / MathF.Sqrt(_headDim);
        var embedding = model.Trunk.TokenEmbedding;
        _embeddingBf16 = embedding.dtype == ScalarType.BFloat16;
        _embedding = NativeTensors.Data(embedding, embedding.dtype);
        _finalNorm = (float*)CopyTo(((LlamaModel)model.Trunk).norm.weight, _allocations);
        _team = new WorkerTeam(threads);
        _matMulJob = MatMulPart;
        _gateUpJob = GateUpPart;
        _attentionJob = AttentionPart;
        _logSumExpJob = LogSumExpPart;
    }

    /// <summary>A decoder over <paramref name="model"/>'s current weights, or null (with the reason) when the model, its
    /// weights or this CPU are not covered: then decoding stays on libtorch. Call inside an open inference-weights scope
    /// that outlives the decoder (the weights are read in place), then <see cref="Bind"/> it to a cache made with
    /// <see cref="CacheDType"/> after the prompt's prefill. Its threads: libtorch's thread count when created.</summary>
    public static CpuDecoder? TryCreate(CausalLanguageModel model, out string? reason)
    {
        reason = Unsupported(model);
        if (reason is not null) return null;
        var trunk = (LlamaModel)model.Trunk;
        var keep = new List<IntPtr>();
        try
        {
            var layers = new LayerWeights[trunk.layers.Count];
            for (int i = 0; i < layers.Length; i++)
            {
                var layer = trunk.layers[i];
                var attention = layer.self_attn;
                var mlp = layer.mlp;
                // Fused copies exist when no projection has an active adapter; otherwise each projection on its own.
                var qkv = attention.InferenceQkv is { } fusedQkv
                    ? Group([(fusedQkv, null)], keep, ref reason)
                    : Group([.. new[] { attention.q_proj, attention.k_proj, attention.v_proj }.Select(Parts)], keep, ref reason);
                var gateUp = mlp.InferenceGateUp is { } fusedGateUp
                    ? Group([(fusedGateUp, null)], keep, ref reason)
                    : Group([Parts(mlp.gate_proj), Parts(mlp.up_proj)], keep, ref reason);
                var o = Group([Parts(attention.o_proj)], keep, ref reason);
                var down = Group([Parts(mlp.down_proj)], keep, ref reason);
                if (qkv is null || gateUp is null || o is null || down is null) return null;
                layers[i] = new LayerWeights(qkv, o, gateUp, down, CopyTo(layer.input_layernorm.weight, keep), CopyTo(layer.post_attention_layernorm.weight, keep));
            }
            Linear? head;
            if (model.lm_head is { } lmHead) head = Group([Parts(lmHead)], keep, ref reason);
            else if ((model.InferenceEmbedding ?? (model.ComputeDType is null || model.ComputeDType == model.DType ? model.Trunk.TokenEmbedding : null)) is { } tied)
                head = Group([((tied, null), null)], keep, ref reason);
            else
            {
                reason = "no inference-weights scope is open";
                return null;
            }
            if (head is null) return null;
            var decoder = new CpuDecoder(model, layers, head, keep, Math.Max(1, torch.get_num_threads()));
            keep.Clear();
            return decoder;
        }
        finally
        {
            foreach (var p in keep) NativeMemory.AlignedFree((void*)p);
        }
    }

    private static ((Tensor Weight, Tensor? Bias)? Base, Projection? Source) Parts(Projection p) => (p.InferenceBaseWeights(), p);

    /// <summary>The projections (base weights, and the projection for its adapter) as consecutive output blocks, or null
    /// with the reason when one is not covered.</summary>
    private static Linear? Group(((Tensor Weight, Tensor? Bias)? Base, Projection? Source)[] parts, List<IntPtr> keep, ref string? reason)
    {
        var blocks = new List<Block>();
        var adapters = new List<LowRank>();
        int offset = 0;
        foreach (var (weights, source) in parts)
        {
            if (weights is null)
            {
                reason = "a projection needs a cast and no inference-weights scope is open";
                return null;
            }
            var matrix = Matrix(weights.Value, keep);
            if (matrix.Data == null)
            {
                reason = $"a weight is {weights.Value.Weight.dtype}, not fp32 or bf16";
                return null;
            }
            blocks.Add(new Block(matrix, offset));
            if (source?.ActiveAdapter is { } adapter)
            {
                if (adapter.Dropout > 0 && source.training)
                {
                    reason = "LoRA dropout is active (the model is in training mode)";
                    return null;
                }
                adapters.Add(LowRankOf(adapter, offset, keep));
            }
            offset += matrix.Rows;
        }
        return new Linear([.. blocks], [.. adapters]);
    }

    private static LowRank LowRankOf(LoraAdapter adapter, int offset, List<IntPtr> keep)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var a = adapter.A.weight.detach().to(ScalarType.Float32).cpu();                                  // (r, in)
        var b = adapter.B.weight.detach().to(ScalarType.Float32).cpu() * adapter.Scaling;                 // (out, r)
        long r = a.shape[0], padded = (r + CpuKernels.Lanes - 1) / CpuKernels.Lanes * CpuKernels.Lanes;
        if (padded > r)
        {
            a = torch.cat([a, torch.zeros([padded - r, a.shape[1]])], 0);
            b = torch.cat([b, torch.zeros([b.shape[0], padded - r])], 1);
        }
        return new LowRank(new WeightMatrix((void*)CopyTo(a, keep), (int)padded, (int)a.shape[1], false, null),
            new WeightMatrix((void*)CopyTo(b, keep), (int)b.shape[0], (int)padded, false, null), offset);
    }

    /// <summary>Why <paramref name="model"/> cannot decode here, or null.</summary>
    private static string? Unsupported(CausalLanguageModel model)
    {
        var c = model.Config;
        if (!CpuKernels.IsSupported) return "this CPU has no 512-bit vectors (AVX-512)";
        if (model.Device.type != DeviceType.CPU) return $"the model is on {model.Device}";
        if (model.Trunk is not LlamaModel) return $"{c.ModelType} is not a Llama-family model";
        if (c.HiddenAct is not ("silu" or "swish")) return $"activation {c.HiddenAct}";
        int lanes = CpuKernels.Lanes;
        if (c.HiddenSize % lanes != 0 || c.IntermediateSize % lanes != 0 || c.HeadDim % lanes != 0)
            return $"hidden size, intermediate size and head size must be multiples of {lanes}";
        if (model.Trunk.TokenEmbedding.dtype is not (ScalarType.Float32 or ScalarType.BFloat16)) return $"embeddings are {model.Trunk.TokenEmbedding.dtype}";
        return null;
    }

    /// <summary>The dtype of the cache to decode into: bf16 when the model computes in bf16 (the libtorch path keeps fp32
    /// for its faster single-query attention, holding the same bf16 values; these kernels read half the bytes), else fp32.</summary>
    public ScalarType CacheDType => _model.Trunk.ActivationDType == ScalarType.BFloat16 ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>Attaches the cache the prompt's prefill wrote; <paramref name="firstPositions"/>: per row, the first cache
    /// slot it attends to (its left padding). Later steps append to the cache. False (with the reason) when the cache
    /// could outgrow a sliding window: libtorch then decodes, and refuses only if the sequence really gets that long.</summary>
    public bool TryBind(KvCache cache, long[] firstPositions, out string? reason)
    {
        var c = _model.Config;
        if (_cache is not null) throw new InvalidOperationException("the decoder is already bound to a cache");
        if (cache.Layers != _layers.Length || cache.Dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentException($"the cache does not fit the model ({cache.Layers} layers of {cache.Dtype})");
        if (firstPositions.Length != cache.Batch) throw new ArgumentException($"expected {cache.Batch} first positions");
        reason = c.SlidingWindow is int window && cache.MaxLength > window ? $"the cache holds more than the sliding window ({window})" : null;
        if (reason is not null) return false;
        _cache = cache;
        _batch = (int)cache.Batch;
        _maxLength = cache.MaxLength;
        _first = firstPositions.Select(p => (int)p).ToArray();
        _cacheBf16 = cache.Dtype == ScalarType.BFloat16;
        _keys = new byte*[_layers.Length];
        _values = new byte*[_layers.Length];
        for (int i = 0; i < _layers.Length; i++)
        {
            var (keys, values) = cache.Layer(i);
            _keys[i] = (byte*)NativeTensors.Data(keys, cache.Dtype);
            _values[i] = (byte*)NativeTensors.Data(values, cache.Dtype);
        }
        var (cos, sin) = ((LlamaModel)_model.Trunk).RotaryTablesFor(_maxLength);
        _cos = (float*)NativeTensors.Data(cos, ScalarType.Float32);
        _sinSigned = (float*)NativeTensors.Data(sin, ScalarType.Float32);
        _x = Allocate(_batch * _hidden);
        _h = Allocate(_batch * _hidden);
        _qkv = Allocate(_batch * _qkvWidth);
        _attn = Allocate(_batch * _heads * _headDim);
        _gateUp = Allocate(_batch * 2 * _intermediate);
        _act = Allocate(_batch * _intermediate);
        _scores = Allocate(_team.Size * _maxLength);
        _lowRank = Allocate(Math.Max(1, _batch * _maxRank));
        return true;
    }

    /// <summary>One decode step: embeds <paramref name="tokens"/> (B) at <paramref name="positions"/> (B), runs every layer
    /// (appending keys and values to the cache) and returns the fp32 logits (B, V). With <paramref name="wantHidden"/>,
    /// also the final normed hidden states (B, C) fp32. With <paramref name="logSumExp"/> (B), also each row's
    /// log-sum-exp of logits / <paramref name="logSumExpDivisor"/>, computed by the threads that wrote the logits (the
    /// sampled token's log-probability is then its logit / divisor minus it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public Tensor Step(long[] tokens, long[] positions, bool wantHidden, out Tensor? hidden, float[]? logSumExp = null, float logSumExpDivisor = 1f)
    {
        var cache = _cache ?? throw new InvalidOperationException("Bind the decoder to a cache first");
        if (tokens.Length != _batch || positions.Length != _batch) throw new ArgumentException($"expected {_batch} tokens and positions");
        cache.CheckRoom(_batch, 1);
        int slot = (int)cache.Length;
        for (int b = 0; b < _batch; b++)
        {
            if (tokens[b] < 0 || tokens[b] >= _vocab) throw new ArgumentException($"token id {tokens[b]} is outside the vocabulary (0..{_vocab - 1})");
            if (positions[b] < 0 || positions[b] >= _maxLength) throw new ArgumentException($"position {positions[b]} is outside 0..{_maxLength - 1}");
            CpuKernels.EmbeddingRow(_embedding, _embeddingBf16, tokens[b], _hidden, _x + (long)b * _hidden);
        }
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];
            CpuKernels.RmsNorm(_x, _batch, _hidden, layer.InputNorm, _eps, _h);
            Apply(layer.Qkv, _h, _qkv, _qkvWidth, accumulate: false);
            for (int b = 0; b < _batch; b++)
            {
                float* row = _qkv + (long)b * _qkvWidth;
                long position = positions[b] * _headDim;
                CpuKernels.Rotate(row, _heads + _kvHeads, _headDim, _cos + position, _sinSigned + position);
                for (int g = 0; g < _kvHeads; g++)
                {
                    long at = ((long)b * _kvHeads + g) * _maxLength + slot;
                    CpuKernels.StoreRow(row + (_heads + g) * _headDim, _keys[l], _cacheBf16, at, _headDim);
                    CpuKernels.StoreRow(row + (_heads + _kvHeads + g) * _headDim, _values[l], _cacheBf16, at, _headDim);
                }
            }
            _jobLayer = l;
            _jobPosition = slot;
            _team.Run(_attentionJob);
            Apply(layer.O, _attn, _x, _hidden, accumulate: true);
            CpuKernels.RmsNorm(_x, _batch, _hidden, layer.PostNorm, _eps, _h);
            if (layer.GateUp.Blocks.Length == 1 && layer.GateUp.Adapters.Length == 0)
                Parallel(_gateUpJob, layer.GateUp.Blocks[0].W, _h, _act, _intermediate, accumulate: false);   // silu(gate) * up in the same section
            else
            {
                Apply(layer.GateUp, _h, _gateUp, 2 * _intermediate, accumulate: false);
                for (int b = 0; b < _batch; b++)
                {
                    float* row = _gateUp + (long)b * 2 * _intermediate;
                    CpuKernels.SiluTimes(row, row + _intermediate, _intermediate, _act + (long)b * _intermediate);
                }
            }
            Apply(layer.Down, _act, _x, _hidden, accumulate: true);
        }
        cache.Advance(1);
        CpuKernels.RmsNorm(_x, _batch, _hidden, _finalNorm, _eps, _h);
        var logits = torch.empty([_batch, _vocab], dtype: ScalarType.Float32);
        float* logitData = (float*)NativeTensors.Data(logits, ScalarType.Float32);
        Apply(_head, _h, logitData, _vocab, accumulate: false);
        if (logSumExp is not null) LogSumExp(logitData, logSumExpDivisor, logSumExp);
        hidden = null;
        if (wantHidden)
        {
            hidden = torch.empty([_batch, _hidden], dtype: ScalarType.Float32);
            long bytes = (long)_batch * _hidden * sizeof(float);
            Buffer.MemoryCopy(_h, NativeTensors.Data(hidden, ScalarType.Float32), bytes, bytes);
        }
        return logits;
    }

    /// <summary>y (+)= every block of <paramref name="linear"/> applied to x, then each adapter's B (A x) added.</summary>
    private void Apply(Linear linear, float* x, float* y, int ldy, bool accumulate)
    {
        foreach (var block in linear.Blocks) Parallel(_matMulJob, block.W, x, y + block.Offset, ldy, accumulate);
        foreach (var adapter in linear.Adapters)
        {
            int rank = adapter.A.Rows;
            CpuKernels.MatMul(adapter.A, x, _batch, 0, rank, _lowRank, rank, accumulate: false);
            CpuKernels.MatMul(adapter.B, _lowRank, _batch, 0, adapter.B.Rows, y + adapter.Offset, ldy, accumulate: true);
        }
    }

    /// <summary>Each row's log-sum-exp of <paramref name="logits"/> (B, V) / <paramref name="divisor"/> into
    /// <paramref name="into"/>: every thread reduces the vocabulary columns its share of the head matmul wrote (still in
    /// its cache), the parts combined here.</summary>
    private void LogSumExp(float* logits, float divisor, float[] into)
    {
        if (into.Length != _batch) throw new ArgumentException($"expected {_batch} log-sum-exp slots");
        if (_logSumExpParts.Length != _team.Size * _batch) _logSumExpParts = new (float, float)[_team.Size * _batch];
        _jobLogits = logits;
        _jobDivisor = divisor;
        _team.Run(_logSumExpJob);
        for (int b = 0; b < _batch; b++)
        {
            float max = float.NegativeInfinity;
            for (int part = 0; part < _team.Size; part++) max = MathF.Max(max, _logSumExpParts[part * _batch + b].Max);
            float sum = 0;
            for (int part = 0; part < _team.Size; part++)
            {
                var (m, s) = _logSumExpParts[part * _batch + b];
                if (s > 0) sum += s * MathF.Exp(m - max);
            }
            into[b] = max + MathF.Log(sum);
        }
    }

    private void LogSumExpPart(int part)
    {
        var (start, end) = Share(part, _vocab, MatMulRows);   // the head matmul's split (MatMulPart)
        for (int b = 0; b < _batch; b++)
            _logSumExpParts[part * _batch + b] = CpuKernels.ScaledExpSum(_jobLogits + (long)b * _vocab, start, end, _jobDivisor);
    }

    private void Parallel(Action<int> job, WeightMatrix weights, float* input, float* output, int ldy, bool accumulate)
    {
        _jobWeights = weights;
        _jobInput = input;
        _jobOutput = output;
        _jobLdy = ldy;
        _jobAccumulate = accumulate;
        _team.Run(job);
    }

    /// <summary>[start, end) of <paramref name="count"/> items for worker <paramref name="part"/>, in multiples of <paramref name="align"/>.</summary>
    private (int Start, int End) Share(int part, int count, int align)
    {
        int chunk = (count + _team.Size * align - 1) / (_team.Size * align) * align;
        int start = Math.Min(count, part * chunk);
        return (start, Math.Min(count, start + chunk));
    }

    /// <summary>A matmul's output rows go to the threads in multiples of the kernel's 4-row tile.</summary>
    private const int MatMulRows = 4;

    private void MatMulPart(int part)
    {
        var (start, end) = Share(part, _jobWeights.Rows, MatMulRows);
        CpuKernels.MatMul(_jobWeights, _jobInput, _batch, start, end, _jobOutput, _jobLdy, _jobAccumulate);
    }

    // Gate rows [j0, j1) and the matching up rows, then silu(gate) * up on the same columns: no second section.
    private void GateUpPart(int part)
    {
        var (start, end) = Share(part, _intermediate, CpuKernels.Lanes);
        if (start == end) return;
        int width = 2 * _intermediate;
        CpuKernels.MatMul(_jobWeights, _jobInput, _batch, start, end, _gateUp, width, accumulate: false);
        CpuKernels.MatMul(_jobWeights, _jobInput, _batch, _intermediate + start, _intermediate + end, _gateUp, width, accumulate: false);
        for (int b = 0; b < _batch; b++)
        {
            float* row = _gateUp + (long)b * width;
            CpuKernels.SiluTimes(row + start, row + _intermediate + start, end - start, _jobOutput + (long)b * _intermediate + start);
        }
    }

    private void AttentionPart(int part)
    {
        int groups = _heads / _kvHeads;
        float* scores = _scores + part * _maxLength;
        var (start, end) = Share(part, _batch * _heads, 1);
        for (int pair = start; pair < end; pair++)
        {
            int b = pair / _heads, h = pair % _heads, g = h / groups;
            long head = ((long)b * _kvHeads + g) * _maxLength;
            CpuKernels.Attend(_qkv + (long)b * _qkvWidth + h * _headDim, _keys[_jobLayer], _values[_jobLayer], _cacheBf16, head, _first[b], _jobPosition,
                _headDim, _scale, scores, _attn + ((long)b * _heads + h) * _headDim);
        }
    }

    private static WeightMatrix Matrix((Tensor Weight, Tensor? Bias) weights, List<IntPtr> keep)
    {
        var (w, bias) = weights;
        if (w.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || w.ndim != 2 || !w.is_contiguous() || w.device_type != DeviceType.CPU)
            return default;
        float* b = bias is null ? null : (float*)CopyTo(bias, keep);
        return new WeightMatrix(NativeTensors.Data(w, w.dtype), (int)w.shape[0], (int)w.shape[1], w.dtype == ScalarType.BFloat16, b);
    }

    /// <summary>An fp32 copy of a small tensor (norm weights, biases) in aligned native memory.</summary>
    private static IntPtr CopyTo(Tensor t, List<IntPtr> keep)
    {
        using var scope = NewDisposeScope();
        var values = t.detach().to(ScalarType.Float32).cpu().data<float>().ToArray();
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(values.Length * sizeof(float)), 64);
        keep.Add((IntPtr)p);
        values.CopyTo(new Span<float>(p, values.Length));
        return (IntPtr)p;
    }

    private float* Allocate(long count)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        new Span<float>(p, (int)count).Clear();
        _allocations.Add((IntPtr)p);
        return p;
    }

    public void Dispose()
    {
        _team.Dispose();
        foreach (var p in _allocations) NativeMemory.AlignedFree((void*)p);
        _allocations.Clear();
        _cache = null;
    }
}
