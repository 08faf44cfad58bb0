// LoRA on our models, as PEFT's get_peft_model / merge / disable_adapter do it. The adapters live inside the
// projections (Models/Projection.cs); this class picks the projections, freezes the base, and switches them.
using System.Runtime.CompilerServices;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Adapters;

/// <summary>What <see cref="Lora.Apply"/> did.</summary>
/// <param name="Config">The config as applied: target modules resolved to names (as PEFT saves them), modules_to_save completed.</param>
/// <param name="AdaptedModules">Full names of the projections that got an adapter.</param>
/// <param name="AdapterParameters">Elements in all lora_A and lora_B matrices.</param>
public sealed record LoraApplyResult(LoraConfig Config, IReadOnlyList<string> AdaptedModules, long AdapterParameters, TrainableParameterReport Report);

public static partial class Lora
{
    // The applied config per model (weakly held: it goes with the model).
    private static readonly ConditionalWeakTable<TransformerModel, LoraConfig> Applied = new();

    /// <summary>The config the model's adapters were applied with, or null without adapters.</summary>
    public static LoraConfig? ConfigOf(TransformerModel model) => Applied.TryGetValue(model, out var c) ? c : null;

    /// <summary>The module name of the model's output head: "lm_head" (untied causal LM), "score", or null (tied).</summary>
    public static string? OutputHeadName(TransformerModel model) => model switch
    {
        ScoreModel => "score",
        CausalLanguageModel { lm_head: not null } => "lm_head",
        _ => null,
    };

    /// <summary>Freezes every base parameter, adds an adapter (A ~ kaiming-uniform(a=sqrt(5)) drawn from
    /// <paramref name="seed"/>, B = 0) to each projection matching <see cref="LoraConfig.TargetModules"/>, and makes the
    /// modules_to_save trainable (a score model's "score" head always). Adapters are fp32 when the base weights are
    /// bf16/fp16 (PEFT's autocast_adapter_dtype), else in the base dtype.</summary>
    public static LoraApplyResult Apply(TransformerModel model, LoraConfig config, long seed = 0)
    {
        config.Validate();
        if (ConfigOf(model) is not null || model.Projections().Any(p => p.Projection.Adapter is not null))
            throw new InvalidOperationException("the model already has LoRA adapters (remove them with Lora.Remove first)");
        var projections = model.Projections();
        string? head = OutputHeadName(model);
        var modulesToSave = config.ModulesToSave.ToList();
        if (model is ScoreModel && !modulesToSave.Contains("score")) modulesToSave.Add("score");

        List<(string Name, Projection Projection)> targets;
        if (config.TargetsAllLinear)
        {
            // PEFT's all-linear: every linear layer except the output embedding (or, for SEQ_CLS, the classifier head).
            targets = projections.Where(p => p.Name != head).ToList();
        }
        else
        {
            foreach (var t in config.TargetModules)
                if (!projections.Any(p => Matches(p.Name, t)))
                    throw new ArgumentException($"target module \"{t}\" matches no projection of this {model.Config.ArchitectureFor(model.Head)} " +
                        $"(its projections: {string.Join(", ", projections.Select(p => LastPart(p.Name)).Distinct())})");
            targets = projections.Where(p => config.TargetModules.Any(t => Matches(p.Name, t))).ToList();
        }
        var saved = modulesToSave.Select(m => (Name: m, Modules: model.named_modules().Where(x => Matches(x.name, m)).ToList())).ToList();
        foreach (var (name, modules) in saved)
        {
            if (modules.Count == 0)
                throw new ArgumentException($"module to save \"{name}\" matches no module of this {model.Config.ArchitectureFor(model.Head)}" +
                    (name == "lm_head" && model.Config.TieWordEmbeddings ? " (its lm_head is tied to the input embeddings)" : ""));
            if (targets.FirstOrDefault(t => modules.Any(m => m.name == t.Name)).Name is string both)
                throw new ArgumentException($"\"{both}\" is both a LoRA target and a module to save; choose one");
        }

        foreach (var p in model.parameters()) p.requires_grad = false;
        var gen = new Generator((ulong)seed);
        long adapterParameters = 0;
        foreach (var (_, projection) in targets)   // name order: the draws do not depend on registration order
        {
            var adapter = NewAdapter(projection, config, gen);
            projection.Attach(adapter);
            adapterParameters += adapter.A.weight.numel() + adapter.B.weight.numel();
        }
        foreach (var (_, modules) in saved)
            foreach (var (_, m) in modules)
                foreach (var p in m.parameters()) p.requires_grad = true;

        var applied = config with
        {
            TargetModules = config.TargetsAllLinear ? targets.Select(t => LastPart(t.Name)).Distinct().Order(StringComparer.Ordinal).ToList() : config.TargetModules,
            ModulesToSave = modulesToSave,
        };
        Applied.AddOrUpdate(model, applied);
        return new LoraApplyResult(applied, targets.Select(t => t.Name).ToList(), adapterParameters, Freezing.Report(model));
    }

    /// <summary>Folds every adapter into its weight (W += B A * scaling); the adapter path is then skipped.</summary>
    public static void Merge(TransformerModel model)
    {
        foreach (var (_, p) in Adapted(model)) p.Merge();
    }

    /// <summary>Takes the adapters back out of the weights (W -= B A * scaling): the inverse of <see cref="Merge"/> up to float rounding.</summary>
    public static void Unmerge(TransformerModel model)
    {
        foreach (var (_, p) in Adapted(model)) p.Unmerge();
    }

    /// <summary>Adapters off until disposed: the model is exactly its base model (the frozen weights, no copy), as
    /// PEFT's <c>with model.disable_adapter():</c>, e.g. for the PPO/DPO reference. Refused while merged.
    /// modules_to_save (a score head) are trained in place, so they stay as trained.</summary>
    public static IDisposable Disabled(TransformerModel model)
    {
        var adapted = Adapted(model);
        if (adapted.Any(p => p.Projection.Merged))
            throw new InvalidOperationException("the adapters are merged into the weights: Lora.Unmerge before disabling them");
        var previous = adapted.Select(p => (p.Projection.Adapter!, p.Projection.Adapter!.Enabled)).ToList();
        foreach (var (adapter, _) in previous) adapter.Enabled = false;
        return new Restore(previous);
    }

    /// <summary>Removes every adapter (PEFT's unload(); merged updates stay in the weights) and the applied config.
    /// requires_grad flags are left as they are.</summary>
    public static void Remove(TransformerModel model)
    {
        foreach (var (_, p) in model.Projections()) p.Detach();
        Applied.Remove(model);
    }

    /// <summary>Merges and removes the adapters: a plain model again (PEFT's merge_and_unload), every parameter trainable.</summary>
    public static void MergeAndUnload(TransformerModel model)
    {
        Merge(model);
        Remove(model);
        foreach (var p in model.parameters()) p.requires_grad = true;
    }

    /// <summary>The adapter parameters (lora_A and lora_B of every adapted projection), in name order.</summary>
    public static IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Parameter)> AdapterParameters(TransformerModel model) =>
        Adapted(model).SelectMany(p => new[] { (p.Name + ".lora_A.weight", p.Projection.Adapter!.A.weight), (p.Name + ".lora_B.weight", p.Projection.Adapter!.B.weight) }).ToList();

    /// <summary>PEFT's key match: the module's full name equals the target or ends with "." + target.</summary>
    internal static bool Matches(string moduleName, string target) =>
        moduleName == target || moduleName.EndsWith("." + target, StringComparison.Ordinal);

    internal static IReadOnlyList<(string Name, Projection Projection)> Adapted(TransformerModel model) =>
        model.Projections().Where(p => p.Projection.Adapter is not null).ToList();

    private static string LastPart(string name) => name[(name.LastIndexOf('.') + 1)..];

    private static LoraAdapter NewAdapter(Projection projection, LoraConfig config, Generator gen)
    {
        var baseDType = projection.weight.dtype;
        var dtype = baseDType is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : baseDType;
        var device = projection.weight.device;
        using var scope = NewDisposeScope();
        // kaiming_uniform_(a=sqrt(5)) on [r, in]: gain sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(in).
        double bound = 1.0 / Math.Sqrt(projection.InFeatures);
        var a = torch.empty([config.Rank, projection.InFeatures], dtype: ScalarType.Float32).uniform_(-bound, bound, gen)
            .to(dtype, device).DetachFromDisposeScope();
        var b = torch.zeros([projection.OutFeatures, config.Rank], dtype: dtype, device: device).DetachFromDisposeScope();
        return new LoraAdapter(a, b, config.Alpha, config.Dropout);
    }

    private sealed class Restore(List<(LoraAdapter Adapter, bool Enabled)> previous) : IDisposable
    {
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            foreach (var (adapter, enabled) in previous) adapter.Enabled = enabled;
        }
    }
}
