// rlhfstudio.json: what a trained model folder needs beyond config.json and the tokenizer files so that the next
// stage (reward model, PPO/DPO policy and reference) formats text exactly as this one was trained: the prompt
// template, plus where the model came from. Written next to config.json in final/ and in every checkpoint.
using System.Text.Json;
using System.Text.Json.Serialization;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Trainers;

public sealed record ModelRecord
{
    public const string FileName = "rlhfstudio.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public int Format { get; init; } = 1;
    /// <summary>The prompt template the model was trained with (one of <see cref="PromptTemplateNames"/>).</summary>
    public required string Template { get; init; }
    /// <summary>The training method that produced the folder.</summary>
    public TrainingMethod? Method { get; init; }
    /// <summary>The model training started from (a folder, or "preset:tiny").</summary>
    public string? BaseModel { get; init; }
    /// <summary>How it was trained (full, lora, freeze).</summary>
    public AdapterKind? Adapter { get; init; }

    public void Write(string folder)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, FileName), JsonSerializer.Serialize(this, Json) + "\n");
    }

    /// <summary>The record of a model folder, or null when it has none (a model not trained here).</summary>
    /// <exception cref="ModelLoadException">The file exists but is malformed or names an unknown template.</exception>
    public static ModelRecord? Read(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) return null;
        ModelRecord? record;
        try { record = JsonSerializer.Deserialize<ModelRecord>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new ModelLoadException($"{path}: is not a valid {FileName} ({e.Message})", e) { FilePath = path }; }
        if (record is null) throw new ModelLoadException($"{path}: is empty") { FilePath = path };
        if (!PromptTemplateNames.All.Contains(record.Template))
            throw new ModelLoadException($"{path}: unknown template \"{record.Template}\" (known: {string.Join(", ", PromptTemplateNames.All)})") { FilePath = path };
        return record;
    }
}
