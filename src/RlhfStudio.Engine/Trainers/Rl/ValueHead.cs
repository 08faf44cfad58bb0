// PPO's value function as a head on the policy's own trunk (TRL's AutoModelForCausalLMWithValueHead, the setting of
// StackLLaMA and of TRL's PPOTrainer up to v0.11): a linear layer hidden -> 1 on the policy's final hidden states. One
// trunk pass then gives both the log-probabilities and the values, in the rollout and in every PPO update, and no
// second model (with its own optimiser state) is held. The value loss trains the shared trunk too (scaled by vf_coef).
// The head is saved with the checkpoints as value_head.safetensors (keys v_head.summary.weight / .bias, TRL's names);
// the final model is the policy alone.
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

public sealed class ValueHead : nn.Module
{
    public const string FileName = "value_head.safetensors";
    public const string KeyPrefix = "v_head.";

    public ValueHead(long hiddenSize, ScalarType? computeDType, Device device) : base("ValueHead")
    {
        RegisterComponents();
        summary = new Projection(hiddenSize, 1, hasBias: true, ScalarType.Float32, device) { ComputeDType = computeDType };
        register_module("summary", summary);
        // Zeros: every value starts at 0, so the first advantages are the plain (KL-penalised) returns rather than returns
        // minus random values of the returns' own size (a random head with std 1/sqrt(hidden) gave values of std ~0.6
        // against scores of ~0.5, i.e. mostly noise, at the policy's learning rate too slow to unlearn). The weights
        // still get gradients (the hidden states are not 0).
        using var noGrad = no_grad();
        summary.weight.zero_();
        summary.bias!.zero_();
    }

    public Projection summary { get; }

    /// <summary>Factor on the head's learning rate (PpoSpec.ValueHeadLearningRateScale): it starts from zero next to a
    /// pre-trained trunk.</summary>
    public double LearningRateScale { get; init; } = 1.0;

    /// <summary>The trained parameters, named as in the saved file (without the v_head. prefix).</summary>
    public IReadOnlyList<NamedParameter> Parameters => named_parameters().Select(p => new NamedParameter(p.name, p.parameter)).ToList();

    /// <summary>Values (..., T) in fp32 for hidden states (..., T, C).</summary>
    public Tensor Values(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return summary.forward(hidden).squeeze(-1).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public void Save(string folder) =>
        SafeTensorsWriter.Write(Path.Combine(folder, FileName), Parameters.Select(p => new KeyValuePair<string, Tensor>(KeyPrefix + p.Name, p.Parameter)));

    /// <summary>Reads what <see cref="Save"/> wrote into this head's parameters (in place: the optimiser holds them).</summary>
    public void Load(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: not found (the checkpoint has no value head; was the run made with sharedValueHead?)") { FilePath = path };
        using var file = SafeTensorsFile.Open(path);
        file.ReadExactlyInto(Parameters.ToDictionary(p => KeyPrefix + p.Name, p => (Tensor)p.Parameter, StringComparer.Ordinal),
            "is not a tensor of this value head");
    }
}
