// The DPO reference model, chosen as TRL does:
//
//   spec.Reference given    that model, loaded frozen (it must share the policy's tokenizer)
//   LoRA policy             the policy itself with its adapters disabled (PEFT's disable_adapter): the frozen base
//                           weights ARE the starting model, so no second copy of the weights is held
//   full / freeze policy    a frozen second load of the starting model (spec.Model)
//
// A separate reference computes in the policy's compute dtype (bf16 or fp32 over fp32 weights), so that at step 0 it
// gives exactly the policy's numbers. The reference always runs in eval mode (TRL puts ref_model in eval), which makes
// its log-probabilities deterministic: precomputed and on-the-fly values are the same numbers.
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Dpo;

public sealed class DpoReference : IDisposable
{
    private readonly CausalLanguageModel _policy;
    private CausalLanguageModel? _copy;
    private InferenceWeightsScope? _copyWeights;
    private bool _released;

    private DpoReference(CausalLanguageModel policy, CausalLanguageModel? copy, string description)
    {
        _policy = policy;
        _copy = copy;
        // A frozen copy: its compute-dtype (and fused) weights are made once, not cast again by every step's forward.
        _copyWeights = copy?.UseInferenceWeights();
        Description = description;
    }

    /// <summary>What the reference is, for logs ("the policy with its LoRA adapters disabled", a folder ...).</summary>
    public string Description { get; }

    /// <summary>True when the reference is the policy with its adapters disabled (no weights of its own).</summary>
    public bool SharesPolicyWeights => _copy is null && !_released;

    /// <summary>The separate reference model, or null when the reference is the policy without adapters.</summary>
    public CausalLanguageModel? Copy => _copy;

    /// <summary>The reference of <paramref name="spec"/> for a policy set up from it (see the file comment).</summary>
    public static DpoReference Create(DpoSpec spec, TrainableModel<CausalLanguageModel> policy)
    {
        if (spec.Reference is null && policy.Adapter == AdapterKind.Lora)
            return new DpoReference(policy.Model, null, "the policy with its LoRA adapters disabled (no second copy of the weights)");
        var source = spec.Reference ?? spec.Model;
        if (spec.Reference is not null)
        {
            if (source.Path is { } folder) ModelLoader.ReadConfig(folder);   // the folder's own errors first
            CheckTokenizer(ModelSetup.LoadTokenizer(source), policy.Tokenizer, source);
        }
        var copy = ModelSetup.LoadCausalLm(source, policy.Tokenizer, spec.Seed, policy.Device);
        try
        {
            if (copy.Config.VocabSize != policy.Model.Config.VocabSize)
                throw new TrainerSetupException($"the reference {source} has {copy.Config.VocabSize} token ids, the policy {policy.Model.Config.VocabSize}: " +
                    "DPO compares their log-probabilities of the same tokens, so they must share a tokenizer");
            foreach (var p in copy.parameters()) p.requires_grad = false;
            copy.ComputeDType = policy.Model.ComputeDType;
            copy.eval();
            var what = spec.Reference is null ? $"a frozen copy of the starting model {source}" : $"the frozen model {source}";
            return new DpoReference(policy.Model, copy, what);
        }
        catch
        {
            copy.Dispose();
            throw;
        }
    }

    /// <summary>The reference's summed completion log-probabilities (2P) of <paramref name="batch"/>, without a graph.</summary>
    public Tensor LogProbs(DpoBatch batch)
    {
        using var noGrad = no_grad();
        using var use = Use(out var model);
        bool wasTraining = model.training;
        model.eval();
        try
        {
            return batch.SequenceLogProbs(model);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>Completions of the reference for <paramref name="promptIds"/> (eval mode; the model's mode is restored).</summary>
    public IReadOnlyList<string> Generate(TextTokenizer tokenizer, IReadOnlyList<IReadOnlyList<int>> promptIds, GenerationSettings settings, CancellationToken cancel)
    {
        using var noGrad = no_grad();
        using var use = Use(out var model);
        bool wasTraining = model.training;
        model.eval();
        try
        {
            return TextGenerator.GenerateText(model, tokenizer, promptIds, settings, cancel: cancel);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>Frees a separate reference once its log-probabilities are precomputed (nothing to free for LoRA).
    /// Later calls that need the reference then fail.</summary>
    public void Release()
    {
        _copyWeights?.Dispose();
        _copyWeights = null;
        _copy?.Dispose();
        _copy = null;
        _released = true;
    }

    public void Dispose() => Release();

    // The reference model until disposed: the copy, or the policy with its adapters off.
    private IDisposable Use(out CausalLanguageModel model)
    {
        if (_copy is not null)
        {
            model = _copy;
            return NoRestore.Instance;
        }
        if (_released) throw new InvalidOperationException("the reference model was released after its log-probabilities were precomputed");
        model = _policy;
        return Lora.Disabled(_policy);
    }

    // TRL requires one tokenizer for policy and reference; ids are compared position by position.
    private static void CheckTokenizer(TextTokenizer reference, TextTokenizer policy, ModelRef source)
    {
        const string probe = "Question: What is 12 + 30?\n\nAnswer: 42";
        if (reference.VocabSize != policy.VocabSize || !reference.Encode(probe).SequenceEqual(policy.Encode(probe)) || reference.EosId != policy.EosId)
            throw new TrainerSetupException($"the reference {source} has a different tokenizer from the policy ({reference} vs {policy}): " +
                "DPO compares their log-probabilities of the same token ids, so the reference must use the policy's tokenizer");
    }

    private sealed class NoRestore : IDisposable
    {
        public static readonly NoRestore Instance = new();
        public void Dispose() { }
    }
}
