// Which parameters train: freezing the lower layers (the layer-freezing recipe), the trainable-parameter report
// (PEFT's print_trainable_parameters) and the parameter list an optimizer should get.
using System.Globalization;
using RlhfStudio.Engine.Models;
using TorchSharp.Modules;

namespace RlhfStudio.Engine.Adapters;

/// <summary>Parameter counts; <see cref="ToString"/> prints PEFT's line
/// ("trainable params: 1,234 || all params: 56,789 || trainable%: 2.1731").</summary>
/// <param name="Notes">Things worth knowing, e.g. that a tied LM head froze with the embeddings.</param>
public sealed record TrainableParameterReport(long Trainable, long Total, IReadOnlyList<string> Notes)
{
    public double TrainablePercent => Total == 0 ? 0 : 100.0 * Trainable / Total;

    public override string ToString()
    {
        var line = string.Format(CultureInfo.InvariantCulture, "trainable params: {0:N0} || all params: {1:N0} || trainable%: {2:F4}", Trainable, Total, TrainablePercent);
        return Notes.Count == 0 ? line : line + "\n" + string.Join("\n", Notes);
    }
}

/// <summary>What <see cref="Freezing.FreezeLowerLayers"/> froze.</summary>
public sealed record FreezeResult(int FrozenLayers, bool FrozenEmbeddings, long FrozenParameters, TrainableParameterReport Report);

public static class Freezing
{
    /// <summary>The parameters with requires_grad, in registration order: what to give AdamW after freezing or LoRA.</summary>
    public static IReadOnlyList<Parameter> TrainableParameters(TransformerModel model) =>
        model.parameters().Where(p => p.requires_grad).ToList();

    /// <summary>Sets requires_grad = false on the first <paramref name="layers"/> decoder layers and, when
    /// <paramref name="freezeEmbeddings"/>, on the embeddings (token, and GPT-2's positions). With tied embeddings
    /// the LM head is the token embedding matrix, so it freezes too (the report says so).</summary>
    public static FreezeResult FreezeLowerLayers(TransformerModel model, int layers, bool freezeEmbeddings = true)
    {
        int total = model.Config.NumHiddenLayers;
        if (layers < 0 || layers > total)
            throw new ArgumentOutOfRangeException(nameof(layers), layers, $"can freeze 0..{total} layers of this model");
        var (layerPrefix, embeddings) = model.Trunk switch
        {
            LlamaModel => ($"{model.Trunk.Prefix}.layers.", new[] { $"{model.Trunk.Prefix}.embed_tokens." }),
            Gpt2Model => ($"{model.Trunk.Prefix}.h.", new[] { $"{model.Trunk.Prefix}.wte.", $"{model.Trunk.Prefix}.wpe." }),
            _ => throw new NotSupportedException($"freezing layers of {model.Trunk.GetType().Name}"),
        };
        var prefixes = Enumerable.Range(0, layers).Select(i => $"{layerPrefix}{i}.").ToList();
        if (freezeEmbeddings) prefixes.AddRange(embeddings);

        long frozen = 0;
        foreach (var (name, p) in model.named_parameters())
            if (prefixes.Any(prefix => name.StartsWith(prefix, StringComparison.Ordinal)))
            {
                p.requires_grad = false;
                frozen += p.numel();
            }
        return new FreezeResult(layers, freezeEmbeddings, frozen, Report(model));
    }

    /// <summary>Trainable and total parameter counts (each tensor once: a tied head is the embedding matrix), with notes.</summary>
    public static TrainableParameterReport Report(TransformerModel model)
    {
        long trainable = 0, total = 0;
        foreach (var p in model.parameters())
        {
            total += p.numel();
            if (p.requires_grad) trainable += p.numel();
        }
        var notes = new List<string>();
        if (model is CausalLanguageModel { lm_head: null } && !model.Trunk.TokenEmbedding.requires_grad)
            notes.Add("the LM head is tied to the token embeddings, which are frozen: the LM head is frozen too");
        if (Lora.ConfigOf(model) is { } config)
        {
            var adapted = Lora.Adapted(model);
            notes.Add($"LoRA r={config.Rank}, alpha={config.Alpha.ToString(CultureInfo.InvariantCulture)} on {adapted.Count} projections ({string.Join(", ", config.TargetModules)})" +
                (config.ModulesToSave.Count > 0 ? $"; trained in full: {string.Join(", ", config.ModulesToSave)}" : ""));
        }
        return new TrainableParameterReport(trainable, total, notes);
    }
}
