// PEFT's LoraConfig, the fields we implement, and its adapter_config.json. Fields PEFT writes that change the maths
// (use_rslora, use_dora, rank_pattern, alpha_pattern, layers_to_transform, bias other than "none") are written with
// their neutral value and refused on load when set, so an adapter we cannot reproduce is never loaded silently.
using System.Text.Json;
using System.Text.Json.Nodes;
using RlhfStudio.Engine.IO;

namespace RlhfStudio.Engine.Adapters;

public sealed record LoraConfig
{
    /// <summary>PEFT's shorthand for every linear layer except the output head (lm_head / score).</summary>
    public const string AllLinear = "all-linear";
    public const string FileName = "adapter_config.json";

    /// <summary>r: rank of the update. PEFT default 8.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>lora_alpha: the update is scaled by alpha / r. PEFT default 8.</summary>
    public double Alpha { get; init; } = 8;
    /// <summary>lora_dropout on the adapter input (training mode only). PEFT default 0.</summary>
    public double Dropout { get; init; }
    /// <summary>Module names matched as PEFT does (the full name or its last dotted parts, e.g. "q_proj"), or
    /// <see cref="AllLinear"/> alone.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [AllLinear];
    /// <summary>Modules trained in full and saved with the adapter. A score model always adds "score" (PEFT's SEQ_CLS).</summary>
    public IReadOnlyList<string> ModulesToSave { get; init; } = [];
    /// <summary>Written to adapter_config.json so that PEFT knows which base model to load.</summary>
    public string? BaseModelNameOrPath { get; init; }

    public bool TargetsAllLinear => TargetModules.Count == 1 && TargetModules[0] == AllLinear;

    public void Validate()
    {
        if (Rank <= 0) throw new ArgumentException($"LoRA rank must be positive, got {Rank}");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) throw new ArgumentException($"lora_alpha must be a positive number, got {Alpha}");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"lora_dropout must be in [0, 1), got {Dropout}");
        if (TargetModules.Count == 0) throw new ArgumentException($"target_modules is empty: name the projections to adapt (e.g. q_proj, v_proj) or use \"{AllLinear}\"");
        if (TargetModules.Count > 1 && TargetModules.Contains(AllLinear))
            throw new ArgumentException($"\"{AllLinear}\" cannot be combined with other target modules");
        if (TargetModules.Concat(ModulesToSave).FirstOrDefault(string.IsNullOrWhiteSpace) is not null)
            throw new ArgumentException("module names must not be empty");
    }

    /// <summary>adapter_config.json as PEFT writes it.</summary>
    internal JsonObject ToJson(string taskType, bool fanInFanOut)
    {
        static JsonArray Strings(IEnumerable<string> values) => new(values.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());
        return new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["bias"] = "none",
            ["fan_in_fan_out"] = fanInFanOut,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = Alpha,
            ["lora_dropout"] = Dropout,
            ["modules_to_save"] = ModulesToSave.Count == 0 ? null : Strings(ModulesToSave),
            ["peft_type"] = "LORA",
            ["r"] = Rank,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = TargetsAllLinear ? AllLinear : Strings(TargetModules),
            ["task_type"] = taskType,
            ["use_dora"] = false,
            ["use_rslora"] = false,
        };
    }

    /// <summary>Reads adapter_config.json; errors name the file and the field.</summary>
    public static (LoraConfig Config, string TaskType, bool FanInFanOut) Load(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: {FileName} not found (is this a PEFT adapter folder?)") { FilePath = path };
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw ModelLoadException.InFile(path, "is not a JSON object"); }
        catch (JsonException e) { throw ModelLoadException.InFile(path, $"is not valid JSON ({e.Message})", inner: e); }

        Exception Bad(string field, string problem) => ModelLoadException.InFile(path, $"\"{field}\" {problem}");
        string? Str(string field) => json[field] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;
        bool IsSet(string field) => json[field] switch
        {
            null => false,
            JsonObject o => o.Count > 0,
            JsonArray a => a.Count > 0,
            JsonValue v => v.GetValueKind() switch { JsonValueKind.False or JsonValueKind.Null => false, _ => true },
            _ => true,
        };
        double Number(string field, double fallback) => json[field] switch
        {
            null => fallback,
            JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.GetValue<double>(),
            _ => throw Bad(field, "must be a number"),
        };
        List<string> StringList(string field)
        {
            if (json[field] is not JsonArray array) throw Bad(field, "must be a list of module names");
            return array.Select(n => n is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw Bad(field, "must hold strings")).ToList();
        }

        if (Str("peft_type") is not "LORA") throw Bad("peft_type", $"is {json["peft_type"]?.ToJsonString() ?? "missing"}: only LORA adapters are supported");
        foreach (var field in new[] { "use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern" })
            if (IsSet(field)) throw Bad(field, "is set: this LoRA variant is not supported");
        if (json["bias"] is not null && Str("bias") != "none") throw Bad("bias", $"is {json["bias"]!.ToJsonString()}: only \"none\" is supported");
        if (json["init_lora_weights"] is JsonValue init && init.GetValueKind() == JsonValueKind.String)
            throw Bad("init_lora_weights", $"is {init.ToJsonString()}: only the default initialisation is supported");

        double r = Number("r", 8);
        if (r != Math.Floor(r) || r <= 0) throw Bad("r", $"must be a positive integer, got {r}");
        List<string> targets = json["target_modules"] switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>() == AllLinear
                ? [AllLinear]
                : throw Bad("target_modules", $"is the pattern {v.ToJsonString()}: regular-expression targets are not supported; list the module names"),
            JsonArray => StringList("target_modules"),
            null => throw Bad("target_modules", "is missing"),
            _ => throw Bad("target_modules", "must be a list of module names"),
        };
        var config = new LoraConfig
        {
            Rank = (int)r,
            Alpha = Number("lora_alpha", 8),
            Dropout = Number("lora_dropout", 0),
            TargetModules = targets,
            ModulesToSave = json["modules_to_save"] is null ? [] : StringList("modules_to_save"),
            BaseModelNameOrPath = Str("base_model_name_or_path"),
        };
        try { config.Validate(); }
        catch (ArgumentException e) { throw ModelLoadException.InFile(path, e.Message, inner: e); }
        var taskType = Str("task_type") ?? throw Bad("task_type", "is missing (CAUSAL_LM or SEQ_CLS)");
        return (config, taskType, json["fan_in_fan_out"] is JsonValue f && f.GetValueKind() == JsonValueKind.True);
    }
}
