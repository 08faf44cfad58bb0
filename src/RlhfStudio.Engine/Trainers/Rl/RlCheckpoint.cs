// What an RL checkpoint holds, besides the files every trainer writes (trainer_state.json, optimizer, scheduler, RNG):
//
//   checkpoint-N/            the policy: a PEFT adapter folder with LoRA, else a Hugging Face model folder (+ tokenizer)
//   checkpoint-N/value_model/ the value model (PPO), in the same form
//   checkpoint-N/rl_state.json  KL coefficient, episodes, reward-hacking guard baselines
using System.Text.Json;
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>rl_state.json: the state of an RL run that is not in trainer_state.json.</summary>
public sealed record RlState(int Format, long Step, long Episode, double KlCoef, double? GuardEntropy, double? GuardScore)
{
    public const string FileName = "rl_state.json";

    public void Save(string folder) => File.WriteAllText(Path.Combine(folder, FileName), JsonSerializer.Serialize(this, CheckpointJson.Options));

    public static RlState Load(string folder)
    {
        var path = Path.Combine(folder, FileName);
        try
        {
            return JsonSerializer.Deserialize<RlState>(File.ReadAllText(path), CheckpointJson.Options)
                ?? throw new CheckpointException($"{path}: empty RL state");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read the RL state (KL coefficient, episodes): {e.Message}", e);
        }
    }
}

public static class RlCheckpoint
{
    public const string ValueFolder = "value_model";

    /// <summary>Writes the trained part of <paramref name="model"/>: its adapter (PEFT layout) with LoRA, else its weights
    /// (Hugging Face layout, in the weights' dtype so that a resume is exact).</summary>
    public static void SaveModel(TransformerModel model, string folder)
    {
        if (Lora.ConfigOf(model) is not null) Lora.Save(model, folder);
        else ModelSaver.Save(model, folder, TorchSharp.torch.ScalarType.Float32);
    }

    /// <summary>Restores what <see cref="SaveModel"/> wrote into the same, already built model (parameters are copied
    /// in place, so an optimiser holding them stays valid).</summary>
    public static void LoadModel(TransformerModel model, string folder)
    {
        if (Lora.ConfigOf(model) is null)
        {
            ModelLoader.LoadWeights(model, folder);
            return;
        }
        var path = Path.Combine(folder, Lora.WeightsFileName);
        if (!File.Exists(path)) throw new CheckpointException($"{path}: missing (the run trains LoRA adapters, so the checkpoint must hold them)");
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        using var file = SafeTensorsFile.Open(path);
        var trainable = ParameterGroups.Trainable(model).Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var key in file.Tensors.Keys)
        {
            var name = key.StartsWith(Lora.KeyPrefix, StringComparison.Ordinal) ? key[Lora.KeyPrefix.Length..] : key;
            if (!parameters.TryGetValue(name, out var target))
                throw new CheckpointException($"{path}: tensor \"{key}\" is not a parameter of this model (a different adapter configuration?)");
            file.ReadInto(key, target);
            trainable.Remove(name);
        }
        if (trainable.Count > 0)
            throw new CheckpointException($"{path}: no values for trained parameter(s) {string.Join(", ", trainable.Take(3))}{(trainable.Count > 3 ? ", ..." : "")}");
    }
}
