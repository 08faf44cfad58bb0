// What an RL checkpoint holds, besides the files every trainer writes (trainer_state.json, optimizer, scheduler, RNG):
//
//   checkpoint-N/            the policy: a PEFT adapter folder with LoRA, else a Hugging Face model folder (+ tokenizer)
//   checkpoint-N/value_model/ the value model (PPO), in the same form
//   checkpoint-N/value_head.safetensors  PPO with sharedValueHead: the head on the policy's trunk
//   checkpoint-N/rl_state.json  KL coefficient, episodes, reward-hacking guard baselines
using System.Text.Json;
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
    /// <summary>Subfolder of a PPO checkpoint holding the value model.</summary>
    public const string ValueFolder = "value_model";
}
