using System.Text.RegularExpressions;
using TorchSharp.Modules;

namespace RlhfStudio.Engine.Training;

/// <summary>A trainable parameter with its name in the model (the key its optimiser state is saved under) and a factor
/// on the learning rate (1 for all but heads trained from scratch next to pre-trained weights, e.g. PPO's shared value head).</summary>
public sealed record NamedParameter(string Name, Parameter Parameter, double LearningRateScale = 1.0);

/// <summary>Which parameters get weight decay, as transformers' <c>Trainer.get_decay_parameter_names</c>: none for
/// biases and normalisation weights.</summary>
public static partial class ParameterGroups
{
    // transformers' forbidden_name_patterns, matched against the lower-cased name.
    [GeneratedRegex(@"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")]
    private static partial Regex NoDecayName();

    /// <summary>True when <paramref name="name"/> (of a parameter with <paramref name="dimensions"/> dimensions) is
    /// decayed. transformers also excludes every parameter of an <c>nn.LayerNorm</c> module by type; GPT-2's
    /// <c>ln_1</c>/<c>ln_2</c>/<c>ln_f</c> match no name pattern, so here every 1-D parameter is excluded instead
    /// (in the supported architectures 1-D parameters are exactly the biases and norm weights).</summary>
    public static bool IsDecayed(string name, long dimensions) =>
        dimensions > 1 && !NoDecayName().IsMatch(name.ToLowerInvariant());

    /// <summary>The parameters of <paramref name="module"/> that require gradients, sorted by name so that the order
    /// (and every reduction over parameters) does not depend on registration order.</summary>
    public static IReadOnlyList<NamedParameter> Trainable(TorchSharp.torch.nn.Module module) =>
        module.named_parameters()
            .Where(p => p.parameter.requires_grad)
            .OrderBy(p => p.name, StringComparer.Ordinal)
            .Select(p => new NamedParameter(p.name, p.parameter))
            .ToList();
}
