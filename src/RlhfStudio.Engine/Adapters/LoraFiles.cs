// Adapter folders in PEFT's format (save_pretrained / from_pretrained): adapter_config.json plus
// adapter_model.safetensors whose keys are get_peft_model_state_dict's: "base_model.model." + the module's name in
// the transformers model + ".lora_A.weight" / ".lora_B.weight" (the adapter name "default" removed), and for
// modules_to_save the module's own parameters, e.g. "base_model.model.score.weight" (PEFT keeps
// "score.modules_to_save.default.weight" in memory and strips "modules_to_save.default" when saving).
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Adapters;

public static partial class Lora
{
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>Prefix of every saved key: PeftModel.base_model (LoraModel) .model (the transformers model).</summary>
    public const string KeyPrefix = "base_model.model.";

    /// <summary>PEFT's task_type for a model head.</summary>
    public static string TaskType(TransformerModel model) => model.Head == ModelHead.SequenceClassification ? "SEQ_CLS" : "CAUSAL_LM";

    /// <summary>Writes the adapters (and modules_to_save) of <paramref name="model"/> as a PEFT adapter folder.</summary>
    /// <returns>The files written.</returns>
    public static IReadOnlyList<string> Save(TransformerModel model, string folder)
    {
        var config = ConfigOf(model) ?? throw new InvalidOperationException("the model has no LoRA adapters to save (Lora.Apply or Lora.Load first)");
        Directory.CreateDirectory(folder);
        var weightsPath = Path.Combine(folder, WeightsFileName);
        SafeTensorsWriter.Write(weightsPath, AdapterTensors(model, config));
        var configPath = Path.Combine(folder, LoraConfig.FileName);
        var json = config.ToJson(TaskType(model), fanInFanOut: model.Config.Family == ModelFamily.Gpt2);
        File.WriteAllText(configPath, json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        return [configPath, weightsPath];
    }

    /// <summary>Applies the adapter folder's config to <paramref name="model"/> (which must have none yet) and loads its
    /// tensors. Everything is checked before any weight changes: the task type against the model's head, every tensor
    /// present, expected and of the right shape. Errors name the file and tensor; on error the model is left as it
    /// was. <paramref name="trainable"/> false (PEFT's default is_trainable) leaves every parameter frozen.</summary>
    public static LoraApplyResult Load(TransformerModel model, string folder, bool trainable = false)
    {
        var configPath = Path.Combine(folder, LoraConfig.FileName);
        var (config, taskType, _) = LoraConfig.Load(configPath);
        // fan_in_fan_out is not checked: PEFT itself corrects it per layer type (true for Conv1D, false for Linear).
        if (taskType != TaskType(model))
            throw ModelLoadException.InFile(configPath, $"is a {taskType} adapter but the model is a {model.Config.ArchitectureFor(model.Head)} ({TaskType(model)})");
        var weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath))
        {
            var bin = Path.Combine(folder, "adapter_model.bin");
            if (File.Exists(bin)) CheckpointFiles.RefusePickle(bin);
            throw new ModelLoadException($"{weightsPath}: not found") { FilePath = weightsPath };
        }

        var flags = model.parameters().Select(p => (p, p.requires_grad)).ToList();
        LoraApplyResult result;
        try { result = Apply(model, config); }
        catch (ArgumentException e) { throw ModelLoadException.InFile(configPath, e.Message, inner: e); }
        try
        {
            using var file = SafeTensorsFile.Open(weightsPath);
            var expected = AdapterTensors(model, result.Config);
            foreach (var name in file.Tensors.Keys.Order(StringComparer.Ordinal))
                if (!expected.ContainsKey(name))
                    throw ModelLoadException.InFile(weightsPath, "is not an adapter tensor of this model with this adapter_config.json (unexpected tensor)", name);
            foreach (var (name, target) in expected.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                if (!file.Tensors.TryGetValue(name, out var info))
                    throw ModelLoadException.InFile(weightsPath, "is missing", name);
                if (!info.Shape.SequenceEqual(target.shape))
                    throw ModelLoadException.InFile(weightsPath, $"has shape [{string.Join(", ", info.Shape)}] but this model and r={config.Rank} need [{string.Join(", ", target.shape)}]", name);
            }
            foreach (var (name, target) in expected) file.ReadInto(name, target);
        }
        catch
        {
            Remove(model);
            foreach (var (p, flag) in flags) p.requires_grad = flag;
            throw;
        }
        if (!trainable)
            foreach (var p in model.parameters()) p.requires_grad = false;
        return result with { Report = Freezing.Report(model) };
    }

    /// <summary>Saves the merged model (W + B A * scaling, no LoRA tensors) as a plain Hugging Face folder with
    /// <see cref="ModelSaver.Save"/>. Adapters that were not merged are unmerged again afterwards, which restores the
    /// weights up to float rounding.</summary>
    public static IReadOnlyList<string> SaveMerged(TransformerModel model, string folder, ScalarType? dtype = null, string? copyTokenizerFilesFrom = null)
    {
        bool wasMerged = !model.HasUnmergedAdapters;
        Merge(model);
        try
        {
            return ModelSaver.Save(model, folder, dtype, copyTokenizerFilesFrom);
        }
        finally
        {
            if (!wasMerged) Unmerge(model);
        }
    }

    /// <summary>The tensors of an adapter file by PEFT key: lora_A/lora_B of every adapted projection, then the
    /// parameters of the modules to save.</summary>
    private static Dictionary<string, Tensor> AdapterTensors(TransformerModel model, LoraConfig config)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, p) in AdapterParameters(model)) tensors[KeyPrefix + name] = p;
        foreach (var module in config.ModulesToSave)
            foreach (var (moduleName, m) in model.named_modules().Where(x => Matches(x.name, module)))
                foreach (var (paramName, p) in m.named_parameters())
                    if (!paramName.Contains("lora_A.", StringComparison.Ordinal) && !paramName.Contains("lora_B.", StringComparison.Ordinal))
                        tensors[$"{KeyPrefix}{moduleName}.{paramName}"] = p;
        return tensors;
    }
}
