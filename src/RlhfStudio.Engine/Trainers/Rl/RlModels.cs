// The models of an on-policy RL run, built from an RlSpec:
//
//   policy      the SFT model (a folder, or a preset in tests), trained in full, with LoRA, or with frozen lower layers
//   reference   the policy's starting weights: with LoRA the same model with its adapters disabled (no second copy);
//               otherwise a frozen second load of the same folder; spec.Reference overrides
//   value       PPO only: spec.ValueModel, else the reward model's folder (TRL's default), else the policy's starting
//               weights with a fresh one-output score head; trained like the policy (full, LoRA or frozen layers);
//               or, with sharedValueHead, a linear head on the policy's own trunk (ValueHead.cs)
//   scorer      a reward model (score head, pooled at the last real token) or a built-in exact scorer
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Training;
using RlhfStudio.Engine.Trainers;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>The models of a run. Owns them (and disposes them) unless built by a caller that keeps ownership.</summary>
public sealed class RlModels : IDisposable
{
    private readonly bool _owned;
    private readonly InferenceWeightsScope? _referenceWeights;

    /// <param name="policy">The policy as set up for training (ModelSetup.ForCausalLm): model, tokenizer, template, adapter.</param>
    /// <param name="referenceCopy">A frozen reference, or null to use the policy with its LoRA adapters disabled.</param>
    /// <param name="value">PPO's value model as set up for training (ModelSetup.ForScoreModel), or null.</param>
    /// <param name="valueHead">PPO's value head on the policy's trunk, instead of a value model.</param>
    public RlModels(TrainableModel<CausalLanguageModel> policy, CausalLanguageModel? referenceCopy, TrainableModel<ScoreModel>? value,
        ISequenceScorer scorer, bool owned = true, ValueHead? valueHead = null)
    {
        if (value is not null && valueHead is not null) throw new ArgumentException("a value model and a shared value head exclude each other");
        if (referenceCopy is null && Lora.ConfigOf(policy.Model) is null)
            throw new ArgumentException("without LoRA adapters on the policy a reference model must be given (a frozen copy of the starting weights)");
        PolicyPart = policy;
        ReferenceCopy = referenceCopy;
        ValuePart = value;
        ValueHead = valueHead;
        Scorer = scorer;
        _owned = owned;
        foreach (var p in referenceCopy?.parameters() ?? []) p.requires_grad = false;
        // A frozen copy's weights never change: its compute-dtype (and fused) inference copies are made once for the
        // run instead of at every rollout (~2 ms each on the tiny bench; the copies existed during every rollout anyway,
        // so the peak memory is the same). Rollout.Score's own scope on it nests inside this one.
        _referenceWeights = referenceCopy?.UseInferenceWeights();
    }

    public TrainableModel<CausalLanguageModel> PolicyPart { get; }
    public TrainableModel<ScoreModel>? ValuePart { get; }
    public TextTokenizer Tokenizer => PolicyPart.Tokenizer;
    public PromptTemplate Template => PolicyPart.Template;
    public CausalLanguageModel Policy => PolicyPart.Model;
    /// <summary>A separate frozen reference, or null when the reference is the policy with its adapters disabled.</summary>
    public CausalLanguageModel? ReferenceCopy { get; }
    public ScoreModel? Value => ValuePart?.Model;
    /// <summary>The value head on the policy's trunk (PPO with sharedValueHead), or null.</summary>
    public ValueHead? ValueHead { get; }
    /// <summary>Whether the run has a value function (a value model or a shared head).</summary>
    public bool HasValues => ValuePart is not null || ValueHead is not null;
    public ISequenceScorer Scorer { get; }

    /// <summary>The reference model until the returned scope is disposed (PEFT's <c>with model.disable_adapter()</c> when
    /// the reference is the policy without its adapters).</summary>
    public IDisposable UseReference(out CausalLanguageModel reference)
    {
        if (ReferenceCopy is not null)
        {
            reference = ReferenceCopy;
            return new Nothing();
        }
        reference = Policy;
        return Lora.Disabled(Policy);
    }

    /// <summary>The parameters the optimiser trains, named "policy.*", "value.*" and "value_head.*" (the names key the
    /// optimiser state).</summary>
    public IReadOnlyList<NamedParameter> TrainableParameters()
    {
        var list = PolicyPart.Parameters.Select(p => new NamedParameter("policy." + p.Name, p.Parameter)).ToList();
        if (ValuePart is not null) list.AddRange(ValuePart.Parameters.Select(p => new NamedParameter("value." + p.Name, p.Parameter)));
        if (ValueHead is not null) list.AddRange(ValueHead.Parameters.Select(p => new NamedParameter("value_head." + p.Name, p.Parameter, ValueHead.LearningRateScale)));
        return list;
    }

    /// <summary>Every model in eval mode: TRL disables dropout in all four models for PPO, so that the log-probabilities of
    /// the rollout and of the training forward come from the same function.</summary>
    public void SetEvalMode()
    {
        Policy.eval();
        ReferenceCopy?.eval();
        Value?.eval();
        ValueHead?.eval();
    }

    public void Dispose()
    {
        _referenceWeights?.Dispose();
        if (!_owned) return;
        PolicyPart.Dispose();
        ReferenceCopy?.Dispose();
        ValuePart?.Dispose();
        ValueHead?.Dispose();
        Scorer.Dispose();
    }

    private sealed class Nothing : IDisposable
    {
        public void Dispose() { }
    }
}
