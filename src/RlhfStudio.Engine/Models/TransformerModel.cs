// The full models: a trunk (named "model" or "transformer" as in HF) plus a head. Later work builds on this
// surface: LoRA lives in the projections (Projection.cs), generation calls Hidden(..., cache) and Logits on the last position,
// PPO's value model is a ScoreModel with one label.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

/// <summary>Parameter counts; "embedding" is what sits in embedding tables (HF's exclude_embeddings).</summary>
public sealed record ParameterCounts(long Total, long Trainable, long Embedding)
{
    public long NonEmbedding => Total - Embedding;
}

public abstract class TransformerModel : nn.Module
{
    protected TransformerModel(string name, ModelConfig config, ScalarType dtype, Device? device) : base(name)
    {
        RegisterComponents();   // see Trunk.cs: children are registered explicitly under their HF names
        config.Validate();
        if (!RlhfStudio.Engine.IO.SafeTensorsDType.IsFloating(dtype)) throw new ArgumentException($"model dtype must be floating point, got {dtype}", nameof(dtype));
        Config = config;
        Trunk = config.Family == ModelFamily.Gpt2 ? new Gpt2Model(config, dtype, device) : new LlamaModel(config, dtype, device);
        register_module(Trunk.Prefix, Trunk);
    }

    public ModelConfig Config { get; }
    public Trunk Trunk { get; }
    public abstract ModelHead Head { get; }
    /// <summary>The dtype of the weights.</summary>
    public ScalarType DType => Trunk.TokenEmbedding.dtype;
    public Device Device => Trunk.TokenEmbedding.device;

    /// <summary>Final hidden states (B, T, hidden); see <see cref="Trunk.Forward"/>.</summary>
    public Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null) =>
        Trunk.Forward(inputIds, attentionMask, positionIds, cache);

    public KvCache NewCache(long batch, long maxLength, ScalarType? dtype = null) => Trunk.NewCache(batch, maxLength, dtype: dtype);

    /// <summary>Compute dtype, our stand-in for torch.autocast (TorchSharp has none): weights stay in <see cref="DType"/>
    /// (fp32 masters for training) and every projection casts its input and weight to this dtype for the matmul, so
    /// gradients reach the masters through the casts. Embedding outputs are cast to it, so the residual stream and
    /// attention run in it; RMSNorm/LayerNorm compute in fp32 inside. Logits and scores come out in it: cast them to
    /// fp32 for a loss. Null (default) = compute in the weights' dtype. bf16 is the one that pays off on CPU.</summary>
    public ScalarType? ComputeDType
    {
        get => Trunk.ComputeDType;
        set
        {
            if (value is ScalarType v && !RlhfStudio.Engine.IO.SafeTensorsDType.IsFloating(v))
                throw new ArgumentException($"compute dtype must be floating point, got {v}", nameof(value));
            if (_inferenceScopes > 0 && value != ComputeDType)
                throw new InvalidOperationException("the compute dtype cannot change while an inference-weights scope is open (its copies are in the old one)");
            Trunk.ComputeDType = value;
            foreach (var p in Projections()) p.Projection.ComputeDType = value;
        }
    }

    private int _inferenceScopes;
    private Tensor? _inferenceEmbedding;

    /// <summary>The tied LM head's weight in the compute dtype inside an inference-weights scope, else null.</summary>
    internal Tensor? InferenceEmbedding => _inferenceEmbedding;

    /// <summary>Opens a scope in which no-grad forwards use copies of the weights made once in the compute dtype (and
    /// concatenated where a layer fuses projections) instead of casting every weight on every call: with fp32
    /// masters and bf16 compute that saves a pass over all weights per decode step. Forwards that record gradients
    /// are unaffected. The weights, adapters and <see cref="ComputeDType"/> must not change while the scope is open.
    /// Scopes nest; the copies are freed when the outermost one is disposed.</summary>
    public InferenceWeightsScope UseInferenceWeights()
    {
        if (_inferenceScopes++ == 0)
        {
            foreach (var (_, m) in named_modules())
                if (m is IInferenceWeights w) w.CacheInferenceWeights();
            if (Config.TieWordEmbeddings && ComputeDType is ScalarType dtype && dtype != DType)
                _inferenceEmbedding = InferenceCopies.Make(Trunk.TokenEmbedding, dtype);
        }
        return new InferenceWeightsScope(this);
    }

    internal void CloseInferenceWeights()
    {
        if (_inferenceScopes == 0 || --_inferenceScopes > 0) return;
        foreach (var (_, m) in named_modules())
            if (m is IInferenceWeights w) w.DropInferenceWeights();
        _inferenceEmbedding?.Dispose();
        _inferenceEmbedding = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && _inferenceScopes > 0)
        {
            _inferenceScopes = 1;
            CloseInferenceWeights();
        }
        base.Dispose(disposing);
    }

    /// <summary>Every projection (linear layer) with its full name, e.g. "model.layers.0.self_attn.q_proj", in name order.</summary>
    public IReadOnlyList<(string Name, Projection Projection)> Projections() =>
        named_modules().Where(m => m.module is Projection).Select(m => (m.name, (Projection)m.module))
            .OrderBy(m => m.name, StringComparer.Ordinal).ToList();

    /// <summary>The weights under their Hugging Face names: <c>state_dict()</c> without LoRA adapter tensors. With
    /// unmerged adapters these are the base weights.</summary>
    public Dictionary<string, Tensor> HfWeights()
    {
        var adapterKeys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, p) in Projections())
            if (p.Adapter is not null)
            {
                adapterKeys.Add(name + ".lora_A.weight");
                adapterKeys.Add(name + ".lora_B.weight");
            }
        return state_dict().Where(kv => !adapterKeys.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
    }

    /// <summary>Some projection has a LoRA adapter whose update is not in its weight (saving the weights alone would lose it).</summary>
    public bool HasUnmergedAdapters => Projections().Any(p => p.Projection.Adapter is not null && !p.Projection.Merged);

    public ParameterCounts CountParameters()
    {
        long total = 0, trainable = 0, embedding = 0;
        foreach (var p in parameters())
        {
            total += p.numel();
            if (p.requires_grad) trainable += p.numel();
        }
        foreach (var (_, m) in named_modules())
            if (m is Embedding e && e.weight is { } w) embedding += w.numel();
        return new ParameterCounts(total, trainable, embedding);
    }

    /// <summary>Random initialisation as transformers' _init_weights: linear and embedding weights ~ N(0, initializer_range),
    /// biases 0, norm weights 1; GPT-2's residual projections (c_proj) use std / sqrt(2 * n_layer). Values are drawn on
    /// the CPU from a generator seeded with <paramref name="seed"/>, so they are identical for every dtype and device.</summary>
    public void InitializeWeights(long seed)
    {
        using var noGrad = torch.no_grad();
        var gen = new Generator((ulong)seed);
        double std = Config.InitializerRange;
        void Normal(Tensor p, double s)
        {
            using var values = torch.empty(p.shape, dtype: ScalarType.Float32).normal_(0, s, gen);
            p.copy_(values);
        }
        // Sorted names: the draw order, and so the weights, do not depend on module registration order.
        foreach (var (name, m) in named_modules().OrderBy(x => x.name, StringComparer.Ordinal))
        {
            switch (m)
            {
                case Conv1D c:
                    Normal(c.weight, name.EndsWith("c_proj", StringComparison.Ordinal) ? std / Math.Sqrt(2.0 * Config.NumHiddenLayers) : std);
                    c.bias.zero_();
                    break;
                case Projection l:
                    Normal(l.weight, std);
                    l.bias?.zero_();
                    break;
                case Embedding e:
                    Normal(e.weight!, std);
                    break;
                case RmsNorm r:
                    r.weight.fill_(1);
                    break;
                case LayerNorm ln:
                    ln.weight?.fill_(1);
                    ln.bias?.zero_();
                    break;
            }
        }
    }

    /// <summary>Parameters a checkpoint of another head may lack; they keep their fresh initialisation.</summary>
    internal virtual IReadOnlySet<string> FreshParameters => new HashSet<string>();
}

/// <summary>A causal language model (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel).
/// With tied embeddings there is no lm_head parameter: the logits use the token embedding matrix, and the
/// saved file omits lm_head.weight as transformers does.</summary>
public sealed class CausalLanguageModel : TransformerModel
{
    public CausalLanguageModel(ModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base("CausalLanguageModel", config, dtype, device)
    {
        if (!config.TieWordEmbeddings)
        {
            lm_head = new Projection(config.HiddenSize, config.VocabSize, hasBias: false, dtype, device);
            register_module("lm_head", lm_head);
        }
    }

    /// <summary>The untied output projection, or null when tied to the token embeddings.</summary>
    public Projection? lm_head { get; }

    public override ModelHead Head => ModelHead.CausalLM;

    /// <summary>(B, T, hidden) -> logits (B, T, vocab), in the compute dtype when one is set.</summary>
    public Tensor Logits(Tensor hidden) =>
        lm_head is not null ? lm_head.forward(hidden)
        : InferenceEmbedding is { } cached && !torch.is_grad_enabled() ? Projection.Linear(hidden, cached, null, cached.dtype)
        : Projection.Linear(hidden, Trunk.TokenEmbedding, null, ComputeDType);

    /// <summary>Summed token cross-entropy (fp32 scalar, with its graph) of the logits of <paramref name="hidden"/> (B, T, C)
    /// at <paramref name="targets"/> (B, T; <see cref="LinearCrossEntropy.IgnoreIndex"/> = not trained), counting correct
    /// argmax predictions into <paramref name="stats"/>. With <paramref name="chunked"/> (by default when the fp32 logits
    /// would exceed <see cref="ChunkedLossAboveBytes"/>) and a plain head (tied, or lm_head without an active adapter),
    /// <see cref="LinearCrossEntropy"/> computes it without ever holding the full logits; otherwise the logits are made
    /// and cross-entropy applied to them in fp32. Measured on the tiny bench (2,048 tokens x 8,192 = 67 MB of logits):
    /// chunked 8,961-9,029 tokens/s against 9,807-10,067 with the full logits, but 575 against 837 MiB peak: it pays
    /// for large vocabularies (1 GB of logits per 2,048 tokens at 128k), not small ones.</summary>
    public Tensor TokenLossSum(Tensor hidden, Tensor targets, TokenLossStats stats, bool? chunked = null)
    {
        using var scope = NewDisposeScope();
        long c = hidden.shape[^1];
        var flatHidden = hidden.reshape(-1, c);
        var flatTargets = targets.reshape(-1);
        bool large = flatHidden.shape[0] * Config.VocabSize * sizeof(float) > ChunkedLossAboveBytes;
        if ((chunked ?? (large || LinearCrossEntropy.UsesKernel(flatHidden))) && PlainHeadOperands(flatHidden) is var (h, w))
            return LinearCrossEntropy.Sum(h, w, flatTargets, stats).MoveToOuterDisposeScope();
        var logits = Logits(flatHidden).to(ScalarType.Float32);                                  // (N, V)
        var loss = nn.functional.cross_entropy(logits, flatTargets, ignore_index: LinearCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum);
        LinearLogProbs.Count(logits, flatTargets, stats);
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>log_softmax(logits / <paramref name="divisor"/>) at <paramref name="tokens"/> (...; <see cref="LinearCrossEntropy.IgnoreIndex"/>
    /// = 0) for hidden states (..., C), fp32 with their graph, and with <paramref name="withEntropy"/> the entropy (...) of
    /// each distribution (no graph). A plain head goes through <see cref="LinearLogProbs"/> (the CPU kernels where they
    /// apply), using the inference copy of its weight in a no-grad forward inside an inference-weights scope; a head
    /// with an active adapter through its logits.</summary>
    public (Tensor LogProbs, Tensor? Entropy) TokenLogProbs(Tensor hidden, Tensor tokens, double divisor, bool withEntropy = false)
    {
        using var scope = NewDisposeScope();
        var flatHidden = hidden.reshape(-1, hidden.shape[^1]);
        var flatTokens = tokens.reshape(-1);
        var (logProbs, entropy) = PlainHeadOperands(flatHidden) is var (h, w)
            ? LinearLogProbs.Compute(h, w, flatTokens, divisor, withEntropy)
            : LinearLogProbs.FromLogits(Logits(flatHidden), flatTokens, divisor, withEntropy);
        return (logProbs.view(tokens.shape).MoveToOuterDisposeScope(), entropy?.view(tokens.shape).MoveToOuterDisposeScope());
    }

    /// <summary>Hidden states (N, C) and the head's weight (V, C), both in the head's matmul dtype (casts in the graph; the
    /// inference copy of an open scope in a no-grad forward), when the head is a plain product (tied, or lm_head without
    /// an active adapter); else null.</summary>
    private (Tensor Hidden, Tensor Weight)? PlainHeadOperands(Tensor flatHidden)
    {
        if (lm_head is not null && (!lm_head.IsPlain || lm_head.FanInFanOut)) return null;
        var dtype = lm_head?.MatmulDType ?? ComputeDType ?? DType;
        Tensor? weight = torch.is_grad_enabled() ? null : lm_head is not null ? lm_head.InferenceWeights()?.Weight : InferenceEmbedding;
        weight ??= lm_head?.weight ?? Trunk.TokenEmbedding;
        return (flatHidden.dtype == dtype ? flatHidden : flatHidden.to(dtype), weight.dtype == dtype ? weight : weight.to(dtype));
    }

    /// <summary>Above this size of a micro-batch's fp32 logits the token loss is computed chunk by chunk.</summary>
    public const long ChunkedLossAboveBytes = 512L << 20;

    /// <summary>Logits (B, T, vocab) for <paramref name="inputIds"/>; arguments as <see cref="Trunk.Forward"/>.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var hidden = Hidden(inputIds, attentionMask, positionIds, cache);
        return Logits(hidden);
    }
}

/// <summary>A trunk with a linear <c>score</c> head (LlamaForSequenceClassification, GPT2ForSequenceClassification):
/// per-token scores (B, T, num_labels). A reward model pools them at the last real token; PPO's value model uses
/// the per-token values (num_labels = 1).</summary>
public sealed class ScoreModel : TransformerModel
{
    public ScoreModel(ModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base("ScoreModel", config, dtype, device)
    {
        score = new Projection(config.HiddenSize, config.NumLabels, hasBias: false, dtype, device);
        register_module("score", score);
    }

    public Projection score { get; }
    public int NumLabels => Config.NumLabels;
    public override ModelHead Head => ModelHead.SequenceClassification;
    internal override IReadOnlySet<string> FreshParameters => new HashSet<string> { "score.weight" };

    /// <summary>(B, T, hidden) -> (B, T, num_labels).</summary>
    public Tensor Scores(Tensor hidden) => score.forward(hidden);

    /// <summary>Per-token scores (B, T, num_labels).</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var hidden = Hidden(inputIds, attentionMask, positionIds, cache);
        return Scores(hidden);
    }

    /// <summary>Index (B) of the last token that is not <paramref name="padTokenId"/>, exactly as transformers'
    /// LlamaForSequenceClassification: argmax(arange(T) * (ids != pad)). Works for left and right padding;
    /// without a pad id, the last position.</summary>
    public static Tensor LastNonPadIndex(Tensor inputIds, long? padTokenId)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        if (padTokenId is not long pad)
            return torch.full([b], t - 1, dtype: ScalarType.Int64, device: inputIds.device);
        using var scope = NewDisposeScope();
        var nonPad = inputIds.ne(pad).to(ScalarType.Int64);
        var tokenIndices = torch.arange(t, dtype: ScalarType.Int64, device: inputIds.device);
        return (tokenIndices * nonPad).argmax(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Scores (B, T, L) -> (B, L) at each row's last non-pad token.</summary>
    public static Tensor Pool(Tensor scores, Tensor inputIds, long? padTokenId)
    {
        using var scope = NewDisposeScope();
        var last = LastNonPadIndex(inputIds, padTokenId);                                         // (B)
        var index = last.view(-1, 1, 1).expand(scores.shape[0], 1, scores.shape[2]);             // (B, 1, L)
        return scores.gather(1, index).squeeze(1).MoveToOuterDisposeScope();
    }
}
