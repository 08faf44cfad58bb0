// A Hugging Face config.json for the causal language models the engine runs. Typed fields for what the
// modules need; the whole JSON object is kept so that saving writes every key we do not understand back
// unchanged (chat templates, quantisation notes, transformers_version, ...).
using System.Text.Json;
using System.Text.Json.Nodes;
using RlhfStudio.Engine.IO;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Models;

/// <summary>Module layout: Llama-style (llama, mistral, qwen2) or GPT-2.</summary>
public enum ModelFamily { Llama, Gpt2 }

/// <summary>Which head the checkpoint was saved with (from <c>architectures</c>).</summary>
public enum ModelHead { CausalLM, SequenceClassification }

/// <summary>Llama 3 rope scaling (<c>rope_scaling</c> with <c>rope_type: "llama3"</c>).</summary>
public sealed record RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    public string Type => "llama3";
}

public sealed record ModelConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2", "gpt2"];

    /// <summary>HF model_type: llama, mistral, qwen2 or gpt2.</summary>
    public required string ModelType { get; init; }
    public ModelFamily Family => ModelType == "gpt2" ? ModelFamily.Gpt2 : ModelFamily.Llama;
    public IReadOnlyList<string> Architectures { get; init; } = [];

    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary>rms_norm_eps (Llama family) or layer_norm_epsilon (GPT-2).</summary>
    public double NormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000;
    public RopeScaling? RopeScaling { get; init; }
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Bias on q/k/v projections (Llama: attention_bias; Qwen2: always).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on the attention output projection (Llama: attention_bias; Qwen2, Mistral: never).</summary>
    public bool OutputBias { get; init; }
    public bool MlpBias { get; init; }
    /// <summary>silu, gelu, gelu_new / gelu_pytorch_tanh, relu.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Mistral's sliding attention window, when active (not implemented: longer inputs are refused).</summary>
    public int? SlidingWindow { get; init; }
    public double InitializerRange { get; init; } = 0.02;

    public long? BosTokenId { get; init; }
    public IReadOnlyList<long> EosTokenIds { get; init; } = [];
    public long? PadTokenId { get; init; }
    /// <summary>torch_dtype (or dtype) as written in the file, e.g. "bfloat16".</summary>
    public string? TorchDtype { get; init; }

    /// <summary>Outputs of a sequence-classification head (len(id2label); HF default 2).</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>id2label names, when the file gives them.</summary>
    public IReadOnlyList<string>? Labels { get; init; }

    /// <summary>The JSON this config was read from (empty for built-in presets). Never mutated.</summary>
    public JsonObject Raw { get; init; } = new();
    /// <summary>Where it was read from, for error messages.</summary>
    public string Source { get; init; } = "config";

    public ModelHead Head => Architectures.Count > 0 && Architectures[0].EndsWith("ForSequenceClassification", StringComparison.Ordinal)
        ? ModelHead.SequenceClassification : ModelHead.CausalLM;

    /// <summary>The transformers class name for this model type with the given head.</summary>
    public string ArchitectureFor(ModelHead head) => (ModelType, head) switch
    {
        ("gpt2", ModelHead.CausalLM) => "GPT2LMHeadModel",
        ("gpt2", _) => "GPT2ForSequenceClassification",
        ("llama", ModelHead.CausalLM) => "LlamaForCausalLM",
        ("llama", _) => "LlamaForSequenceClassification",
        ("mistral", ModelHead.CausalLM) => "MistralForCausalLM",
        ("mistral", _) => "MistralForSequenceClassification",
        ("qwen2", ModelHead.CausalLM) => "Qwen2ForCausalLM",
        ("qwen2", _) => "Qwen2ForSequenceClassification",
        _ => throw new NotSupportedException($"model_type \"{ModelType}\""),
    };

    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: config.json not found") { FilePath = path };
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw ModelLoadException.InFile(path, $"is not valid JSON ({e.Message})", inner: e); }
        if (node is not JsonObject obj) throw ModelLoadException.InFile(path, "is not a JSON object");
        return Parse(obj, path);
    }

    /// <summary>Reads a config object; <paramref name="source"/> names it in errors.</summary>
    public static ModelConfig Parse(JsonObject json, string source = "config.json")
    {
        var r = new Reader(json, source);
        string modelType = r.String("model_type")
            ?? throw ModelLoadException.InFile(source, $"has no \"model_type\" (supported: {string.Join(", ", SupportedModelTypes)})");
        if (!SupportedModelTypes.Contains(modelType))
            throw ModelLoadException.InFile(source, $"model_type \"{modelType}\" is not supported (supported: {string.Join(", ", SupportedModelTypes)})");

        var architectures = r.StringList("architectures") ?? [];
        var (numLabels, labels) = r.Labels();
        var eos = r.IdList("eos_token_id");
        ModelConfig config;
        if (modelType == "gpt2")
        {
            int hidden = r.Int("n_embd") ?? 768;
            int heads = r.Int("n_head") ?? 12;
            if (r.Bool("scale_attn_by_inverse_layer_idx") == true || r.Bool("reorder_and_upcast_attn") == true)
                throw ModelLoadException.InFile(source, "GPT-2 options scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported");
            config = new ModelConfig
            {
                ModelType = modelType,
                VocabSize = r.Int("vocab_size") ?? 50257,
                HiddenSize = hidden,
                IntermediateSize = r.Int("n_inner") ?? 4 * hidden,
                NumHiddenLayers = r.Int("n_layer") ?? 12,
                NumAttentionHeads = heads,
                NumKeyValueHeads = heads,
                HeadDim = heads > 0 ? hidden / heads : 0,
                MaxPositionEmbeddings = r.Int("n_positions") ?? 1024,
                NormEps = r.Double("layer_norm_epsilon") ?? 1e-5,
                TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? true,
                QkvBias = true,
                OutputBias = true,
                MlpBias = true,
                HiddenAct = r.String("activation_function") ?? "gelu_new",
                InitializerRange = r.Double("initializer_range") ?? 0.02,
                BosTokenId = r.Id("bos_token_id") ?? 50256,
                EosTokenIds = eos ?? [50256],
                PadTokenId = r.Id("pad_token_id"),
            };
        }
        else
        {
            int hidden = r.Required("hidden_size");
            int heads = r.Required("num_attention_heads");
            bool attentionBias = r.Bool("attention_bias") ?? false;
            config = new ModelConfig
            {
                ModelType = modelType,
                VocabSize = r.Required("vocab_size"),
                HiddenSize = hidden,
                IntermediateSize = r.Required("intermediate_size"),
                NumHiddenLayers = r.Required("num_hidden_layers"),
                NumAttentionHeads = heads,
                NumKeyValueHeads = r.Int("num_key_value_heads") ?? heads,
                HeadDim = r.Int("head_dim") ?? (heads > 0 ? hidden / heads : 0),
                MaxPositionEmbeddings = r.Int("max_position_embeddings") ?? 2048,
                NormEps = r.Double("rms_norm_eps") ?? 1e-6,
                RopeTheta = r.Double("rope_theta") ?? 10000,
                RopeScaling = r.RopeScaling(),
                TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? false,
                // transformers: Llama uses attention_bias on q/k/v/o; Qwen2 has q/k/v bias and no o bias; Mistral none.
                QkvBias = modelType switch { "qwen2" => true, "llama" => attentionBias, _ => false },
                OutputBias = modelType == "llama" && attentionBias,
                MlpBias = modelType == "llama" && (r.Bool("mlp_bias") ?? false),
                HiddenAct = r.String("hidden_act") ?? "silu",
                SlidingWindow = modelType == "mistral" || (modelType == "qwen2" && r.Bool("use_sliding_window") == true)
                    ? r.Int("sliding_window") : null,
                InitializerRange = r.Double("initializer_range") ?? 0.02,
                BosTokenId = r.Id("bos_token_id"),
                EosTokenIds = eos ?? [],
                PadTokenId = r.Id("pad_token_id"),
            };
        }
        config = config with
        {
            Architectures = architectures,
            TorchDtype = r.String("torch_dtype") ?? r.String("dtype"),
            NumLabels = numLabels,
            Labels = labels,
            Raw = (JsonObject)json.DeepClone(),
            Source = source,
        };
        config.Validate();
        return config;
    }

    /// <summary>Checks sizes are consistent; throws naming <see cref="Source"/>.</summary>
    public void Validate()
    {
        void Fail(string problem) => throw ModelLoadException.InFile(Source, problem);
        if (VocabSize <= 0 || HiddenSize <= 0 || IntermediateSize <= 0 || NumHiddenLayers <= 0 || NumAttentionHeads <= 0 || NumKeyValueHeads <= 0 || HeadDim <= 0)
            Fail("vocab size, hidden size, intermediate size, layers, heads, kv heads and head dim must all be positive");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            Fail($"num_attention_heads ({NumAttentionHeads}) is not a multiple of num_key_value_heads ({NumKeyValueHeads})");
        if (Family == ModelFamily.Gpt2 && HiddenSize % NumAttentionHeads != 0)
            Fail($"n_embd ({HiddenSize}) is not a multiple of n_head ({NumAttentionHeads})");
        if (Family == ModelFamily.Llama && HeadDim % 2 != 0)
            Fail($"head_dim ({HeadDim}) must be even for rotary embeddings");
        if (MaxPositionEmbeddings <= 0) Fail("max_position_embeddings must be positive");
        if (!(NormEps > 0)) Fail("the norm epsilon must be positive");
        if (!(RopeTheta > 0)) Fail("rope_theta must be positive");
        if (NumLabels <= 0) Fail("num_labels must be positive");
        if (Activations.Find(HiddenAct) is null)
            Fail($"activation \"{HiddenAct}\" is not supported (supported: {string.Join(", ", Activations.Names)})");
    }

    /// <summary>The config.json object to save: the original JSON with every typed field written over it,
    /// <c>architectures</c> set for <paramref name="head"/> and <c>torch_dtype</c> for the stored weights.</summary>
    public JsonObject ToJson(ModelHead head, ScalarType? storedDType = null)
    {
        var o = (JsonObject)Raw.DeepClone();
        o["architectures"] = new JsonArray(ArchitectureFor(head));
        o["model_type"] = ModelType;
        o["vocab_size"] = VocabSize;
        if (Family == ModelFamily.Gpt2)
        {
            o["n_embd"] = HiddenSize;
            o["n_layer"] = NumHiddenLayers;
            o["n_head"] = NumAttentionHeads;
            o["n_positions"] = MaxPositionEmbeddings;
            o["n_inner"] = IntermediateSize;
            o["layer_norm_epsilon"] = NormEps;
            o["activation_function"] = HiddenAct;
        }
        else
        {
            o["hidden_size"] = HiddenSize;
            o["intermediate_size"] = IntermediateSize;
            o["num_hidden_layers"] = NumHiddenLayers;
            o["num_attention_heads"] = NumAttentionHeads;
            o["num_key_value_heads"] = NumKeyValueHeads;
            o["head_dim"] = HeadDim;
            o["max_position_embeddings"] = MaxPositionEmbeddings;
            o["rms_norm_eps"] = NormEps;
            o["rope_theta"] = RopeTheta;
            o["hidden_act"] = HiddenAct;
            if (ModelType == "llama")
            {
                o["attention_bias"] = QkvBias;
                o["mlp_bias"] = MlpBias;
            }
            if (RopeScaling is { } rs && !o.ContainsKey("rope_scaling"))
                o["rope_scaling"] = new JsonObject
                {
                    ["rope_type"] = rs.Type,
                    ["factor"] = rs.Factor,
                    ["low_freq_factor"] = rs.LowFreqFactor,
                    ["high_freq_factor"] = rs.HighFreqFactor,
                    ["original_max_position_embeddings"] = rs.OriginalMaxPositionEmbeddings,
                };
        }
        o["initializer_range"] = InitializerRange;
        o["tie_word_embeddings"] = TieWordEmbeddings;
        o["bos_token_id"] = BosTokenId is long b ? JsonValue.Create(b) : null;
        o["eos_token_id"] = EosTokenIds.Count == 1 && o["eos_token_id"] is not JsonArray
            ? JsonValue.Create(EosTokenIds[0])
            : EosTokenIds.Count == 0 ? null : new JsonArray(EosTokenIds.Select(id => (JsonNode?)JsonValue.Create(id)).ToArray());
        o["pad_token_id"] = PadTokenId is long p ? JsonValue.Create(p) : null;
        var dtypeName = storedDType is ScalarType st ? SafeTensorsDType.TorchName(st) : TorchDtype;
        if (dtypeName is not null)
        {
            o["torch_dtype"] = dtypeName;
            if (o.ContainsKey("dtype")) o["dtype"] = dtypeName;
        }
        if (head == ModelHead.SequenceClassification)
        {
            var id2label = new JsonObject();
            var label2id = new JsonObject();
            for (int i = 0; i < NumLabels; i++)
            {
                string name = Labels is { } l && l.Count == NumLabels ? l[i] : $"LABEL_{i}";
                id2label[i.ToString(System.Globalization.CultureInfo.InvariantCulture)] = name;
                label2id[name] = i;
            }
            o["id2label"] = id2label;
            o["label2id"] = label2id;
            o.Remove("num_labels");
        }
        return o;
    }

    public void Save(string path, ModelHead head, ScalarType? storedDType = null)
    {
        var json = ToJson(head, storedDType).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        File.WriteAllText(path, json + "\n");
    }

    /// <summary>Typed reads of one config object with errors that name the file and key.</summary>
    private sealed class Reader(JsonObject json, string source)
    {
        // Numbers are read through their JSON text: a JsonValue built in code from an int will not TryGetValue as long.
        private static bool TryLong(JsonNode? n, out long value)
        {
            value = 0;
            return n is JsonValue v && v.GetValueKind() == JsonValueKind.Number
                && long.TryParse(v.ToJsonString(), System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out value);
        }

        private static bool TryDouble(JsonNode? n, out double value)
        {
            value = 0;
            return n is JsonValue v && v.GetValueKind() == JsonValueKind.Number
                && double.TryParse(v.ToJsonString(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out value);
        }

        private JsonNode? Get(string key) => json.TryGetPropertyValue(key, out var n) ? n : null;

        private ModelLoadException Bad(string key, string expected) =>
            ModelLoadException.InFile(source, $"\"{key}\" should be {expected} but is {Get(key)?.ToJsonString()}");

        public string? String(string key) => Get(key) switch
        {
            null => null,
            JsonValue v when v.TryGetValue(out string? s) => s,
            _ => throw Bad(key, "a string"),
        };

        public int? Int(string key)
        {
            var n = Get(key);
            if (n is null) return null;
            if (TryDouble(n, out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue)
                return (int)d;
            throw Bad(key, "an integer");
        }

        public int Required(string key) => Int(key) ?? throw ModelLoadException.InFile(source, $"has no \"{key}\"");

        public long? Id(string key)
        {
            var n = Get(key);
            if (n is null) return null;
            if (TryLong(n, out long l)) return l;
            if (n is JsonArray { Count: > 0 } a && TryLong(a[0], out long first)) return first;
            throw Bad(key, "a token id");
        }

        public IReadOnlyList<long>? IdList(string key)
        {
            var n = Get(key);
            if (n is null) return null;
            if (TryLong(n, out long l)) return [l];
            if (n is JsonArray a)
                return a.Select(x => TryLong(x, out long id) ? id : throw Bad(key, "a token id or a list of them")).ToList();
            throw Bad(key, "a token id or a list of them");
        }

        public double? Double(string key)
        {
            var n = Get(key);
            if (n is null) return null;
            if (TryDouble(n, out double d)) return d;
            throw Bad(key, "a number");
        }

        public bool? Bool(string key) => Get(key) switch
        {
            null => null,
            JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
            _ => throw Bad(key, "true or false"),
        };

        public IReadOnlyList<string>? StringList(string key) => Get(key) switch
        {
            null => null,
            JsonArray a => a.Select(x => x is JsonValue xv && xv.TryGetValue(out string? s) ? s : throw Bad(key, "a list of strings")).ToList(),
            _ => throw Bad(key, "a list of strings"),
        };

        public (int, IReadOnlyList<string>?) Labels()
        {
            IReadOnlyList<string>? labels = null;
            if (Get("id2label") is JsonObject id2label)
            {
                var names = new string[id2label.Count];
                foreach (var (k, v) in id2label)
                {
                    if (!int.TryParse(k, out int i) || i < 0 || i >= names.Length || v is not JsonValue sv || !sv.TryGetValue(out string? s))
                        throw Bad("id2label", "a map from 0..n-1 to label names");
                    names[i] = s;
                }
                labels = names;
            }
            int count = Int("num_labels") ?? labels?.Count ?? 2;
            if (labels is not null && labels.Count != count) labels = null;
            return (count, labels);
        }

        public RopeScaling? RopeScaling()
        {
            var n = Get("rope_scaling");
            if (n is null) return null;
            if (n is not JsonObject o) throw Bad("rope_scaling", "an object");
            string? type = (o["rope_type"] ?? o["type"]) is JsonValue tv && tv.TryGetValue(out string? t) ? t : null;
            if (type == "default") return null;
            if (type != "llama3")
                throw ModelLoadException.InFile(source, $"rope_scaling type \"{type ?? "(none)"}\" is not supported (supported: llama3)");
            double Num(string key) => TryDouble(o[key], out double d)
                ? d : throw ModelLoadException.InFile(source, $"rope_scaling (llama3) needs a number \"{key}\"");
            var scaling = new RopeScaling(Num("factor"), Num("low_freq_factor"), Num("high_freq_factor"), (int)Num("original_max_position_embeddings"));
            if (!(scaling.Factor > 0) || !(scaling.HighFreqFactor > scaling.LowFreqFactor) || !(scaling.LowFreqFactor > 0) || scaling.OriginalMaxPositionEmbeddings <= 0)
                throw ModelLoadException.InFile(source, "rope_scaling (llama3) needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0");
            return scaling;
        }
    }
}
