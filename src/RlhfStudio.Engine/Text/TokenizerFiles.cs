// Reading a Hugging Face tokenizer folder: which model file to use, and which tokens are bos/eos/pad/unk.
//
// Special tokens are looked up as transformers does, first hit wins:
//   tokenizer_config.json "<x>_token" (a string or an AddedToken object {"content": ...})
//   special_tokens_map.json "<x>_token"
//   generation_config.json, then config.json "<x>_token_id" (an id or a list of ids: the first)
//   the model's own (SentencePiece <s>/</s>/<unk>; "<|endoftext|>" for byte-level BPE that has it)
// and pad falls back to eos when still absent (TRL does the same before training).
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace RlhfStudio.Engine.Text;

/// <summary>What a model file gives: the encoding model, its vocabulary, added tokens, default specials,
/// and the bytes to write back on save (file name -> content).</summary>
internal sealed record TokenizerParts(
    TokenizerKind Kind,
    Tokenizer Model,
    IReadOnlyDictionary<string, int> Vocabulary,
    IReadOnlyList<AddedToken> AddedTokens,
    bool AddPrefixSpace,
    IReadOnlyDictionary<string, byte[]> ModelFiles,
    string? DefaultBos = null,
    string? DefaultEos = null,
    string? DefaultUnk = null,
    bool? AddBos = null);

internal sealed record NamedToken(string Content, int Id);

internal sealed record SpecialTokens(NamedToken? Bos, NamedToken? Eos, NamedToken? Pad, NamedToken? Unk, bool AddBos);

internal static class TokenizerFiles
{
    public const string TokenizerJson = "tokenizer.json";
    public const string TokenizerModel = "tokenizer.model";
    public const string TokenizerConfig = "tokenizer_config.json";
    public const string SpecialTokensMap = "special_tokens_map.json";
    public const string GenerationConfig = "generation_config.json";
    public const string ModelConfig = "config.json";
    public const string ChatTemplateFile = "chat_template.jinja";

    public static TextTokenizer Load(string folder)
    {
        if (!Directory.Exists(folder))
            throw new TokenizerLoadException($"tokenizer folder \"{folder}\" does not exist");

        var configPath = Path.Combine(folder, TokenizerConfig);
        var config = ReadObject(configPath, required: false) ?? [];
        var jsonPath = Path.Combine(folder, TokenizerJson);
        var modelPath = Path.Combine(folder, TokenizerModel);
        var configAdded = AddedTokensFromConfig(configPath, config);

        TokenizerParts parts;
        if (File.Exists(jsonPath))
            parts = TokenizerJsonModel.Load(jsonPath, File.Exists(modelPath) ? modelPath : null, configAdded);
        else if (File.Exists(modelPath))
            parts = SentencePieceModels.FromModelFile(modelPath, configAdded);
        else
            throw new TokenizerLoadException(
                $"no tokenizer in \"{folder}\": expected {TokenizerJson} (Hugging Face fast tokenizer) or {TokenizerModel} (SentencePiece)");

        var sources = new List<(string Path, JsonObject Json)> { (configPath, config) };
        var mapPath = Path.Combine(folder, SpecialTokensMap);
        if (ReadObject(mapPath, required: false) is { } map) sources.Add((mapPath, map));
        var idSources = new List<(string Path, JsonObject Json)>();
        foreach (var name in new[] { GenerationConfig, ModelConfig })
        {
            var path = Path.Combine(folder, name);
            if (ReadObject(path, required: false) is { } json) idSources.Add((path, json));
        }

        return Build(parts, sources, idSources, configPath, config, ChatTemplate(folder, configPath, config));
    }

    /// <summary>Resolves the special tokens and builds the tokenizer; <paramref name="sources"/> are the
    /// files with "&lt;x&gt;_token" strings, <paramref name="idSources"/> those with "&lt;x&gt;_token_id" ids.</summary>
    public static TextTokenizer Build(TokenizerParts parts, List<(string Path, JsonObject Json)> sources,
        List<(string Path, JsonObject Json)> idSources, string configPath, JsonObject config, string? chatTemplate)
    {
        var specials = ResolveSpecials(parts, sources, idSources, configPath, config);
        parts = WithSpecialsAsAdded(parts, specials);
        return new TextTokenizer(parts, specials, config, chatTemplate);
    }

    /// <summary>Reads a JSON object; null when the file is absent and not required.</summary>
    public static JsonObject? ReadObject(string path, bool required)
    {
        if (!File.Exists(path))
            return required ? throw new TokenizerLoadException($"{path}: file not found") : null;
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(File.ReadAllText(path),
                documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException ex)
        {
            throw new TokenizerLoadException($"{path}: malformed JSON: {ex.Message}", ex);
        }
        return node as JsonObject ?? throw new TokenizerLoadException($"{path}: expected a JSON object at the top level");
    }

    /// <summary>A property of an object node; null when the node is not an object (never throws).</summary>
    public static JsonNode? Prop(JsonNode? node, string key) => (node as JsonObject)?[key];

    public static string? GetString(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    public static bool? GetBool(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;

    public static int? GetInt(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;

    /// <summary>tokenizer_config.json "added_tokens_decoder": {"32000": {"content": "...", "special": true}}.</summary>
    private static List<AddedToken> AddedTokensFromConfig(string path, JsonObject config)
    {
        var result = new List<AddedToken>();
        if (config["added_tokens_decoder"] is not JsonObject decoder) return result;
        foreach (var (key, value) in decoder)
        {
            if (!int.TryParse(key, out var id) || GetString(Prop(value, "content")) is not { } content)
                throw new TokenizerLoadException($"{path}: added_tokens_decoder entry \"{key}\" needs an integer id and a \"content\" string");
            result.Add(new AddedToken(id, content, GetBool(Prop(value, "special")) ?? false));
        }
        return result;
    }

    private static SpecialTokens ResolveSpecials(
        TokenizerParts parts, List<(string Path, JsonObject Json)> sources, List<(string Path, JsonObject Json)> idSources,
        string configPath, JsonObject config)
    {
        var byContent = new Dictionary<string, int>(parts.Vocabulary, StringComparer.Ordinal);
        foreach (var t in parts.AddedTokens) byContent[t.Content] = t.Id;
        Dictionary<int, string>? byId = null;

        NamedToken? Find(string name, string? fallback)
        {
            var key = name + "_token";
            foreach (var (path, json) in sources)
            {
                if (!json.TryGetPropertyValue(key, out var node) || node is null) continue;
                var content = GetString(node) ?? GetString(Prop(node, "content"))
                    ?? throw new TokenizerLoadException($"{path}: \"{key}\" must be a string or an object with a \"content\" string");
                return byContent.TryGetValue(content, out var id)
                    ? new NamedToken(content, id)
                    : throw new TokenizerLoadException($"{path}: {key} \"{content}\" is not in the tokenizer's vocabulary");
            }
            var idKey = name + "_token_id";
            foreach (var (path, json) in idSources)
            {
                var node = json[idKey];
                if (node is JsonArray arr) node = arr.Count > 0 ? arr[0] : null;
                if (node is null) continue;
                var id = GetInt(node) ?? throw new TokenizerLoadException($"{path}: \"{idKey}\" must be an integer or a list of integers");
                byId ??= byContent.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
                return byId.TryGetValue(id, out var content)
                    ? new NamedToken(content, id)
                    : throw new TokenizerLoadException($"{path}: {idKey} {id} is not an id of the tokenizer");
            }
            return fallback is not null && byContent.TryGetValue(fallback, out var fid) ? new NamedToken(fallback, fid) : null;
        }

        var addBos = GetBool(config["add_bos_token"]);
        if (config.ContainsKey("add_bos_token") && addBos is null)
            throw new TokenizerLoadException($"{configPath}: \"add_bos_token\" must be true or false");
        return new SpecialTokens(
            Find("bos", parts.DefaultBos), Find("eos", parts.DefaultEos), Find("pad", null), Find("unk", parts.DefaultUnk),
            addBos ?? parts.AddBos ?? false);
    }

    /// <summary>Makes bos/eos/pad/unk match whole in text (as HF does for all special tokens).</summary>
    private static TokenizerParts WithSpecialsAsAdded(TokenizerParts parts, SpecialTokens specials)
    {
        var added = parts.AddedTokens.ToList();
        foreach (var t in new[] { specials.Bos, specials.Eos, specials.Pad, specials.Unk })
            if (t is not null && !added.Any(a => a.Content == t.Content))
                added.Add(new AddedToken(t.Id, t.Content, Special: true));
        return parts with { AddedTokens = added };
    }

    private static string? ChatTemplate(string folder, string configPath, JsonObject config)
    {
        switch (config["chat_template"])
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                return s;
            case JsonArray list:
                // Newer form: [{"name": "default", "template": "..."}, ...]
                var named = list.OfType<JsonObject>().ToList();
                var chosen = named.FirstOrDefault(o => GetString(o["name"]) == "default") ?? named.FirstOrDefault();
                return GetString(chosen?["template"])
                    ?? throw new TokenizerLoadException($"{configPath}: \"chat_template\" list needs objects with a \"template\" string");
            case null:
                var file = Path.Combine(folder, ChatTemplateFile);
                return File.Exists(file) ? File.ReadAllText(file) : null;
            default:
                throw new TokenizerLoadException($"{configPath}: \"chat_template\" must be a string or a list of named templates");
        }
    }
}
