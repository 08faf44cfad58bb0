// Hugging Face tokenizer.json -> Microsoft.ML.Tokenizers model. The library has no loader for this
// format, so we read it ourselves:
//   byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM): model.vocab + model.merges ("a b" or ["a","b"]) into a
//     BpeTokenizer with ByteLevel = true, and the split regex taken from pre_tokenizer (GPT-2's regex when it
//     is ByteLevel alone; the Split pattern of a Sequence[Split, ByteLevel(use_regex=false)] otherwise);
//   SentencePiece-style BPE (Llama 2, TinyLlama: byte_fallback, "▁" for spaces): tokenizer.model when it
//     is beside the file, else a SentencePiece model rebuilt from vocab + merges (SentencePieceModels).
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using static RlhfStudio.Engine.Text.TokenizerFiles;

namespace RlhfStudio.Engine.Text;

internal static class TokenizerJsonModel
{
    /// <summary>GPT-2's pre-tokenizer regex (ByteLevel with use_regex = true).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static TokenizerParts Load(string path, string? spModelPath, IReadOnlyList<AddedToken> configAdded) =>
        FromJson(path, ReadObject(path, required: true)!, File.ReadAllBytes(path), spModelPath, configAdded);

    /// <param name="path">Names the source in error messages.</param>
    /// <param name="raw">The bytes Save writes back as tokenizer.json.</param>
    public static TokenizerParts FromJson(string path, JsonObject root, byte[] raw, string? spModelPath, IReadOnlyList<AddedToken> configAdded)
    {
        var model = root["model"] as JsonObject
            ?? throw new TokenizerLoadException($"{path}: no \"model\" object");
        // Old files omit model.type; a merges list means BPE.
        var type = GetString(model["type"]) ?? (model.ContainsKey("merges") ? "BPE" : "unknown");
        var added = MergeAdded(ParseAddedTokens(path, root), configAdded);

        if (type == "BPE" && IsByteLevel(root))
            return ByteLevel(path, root, model, added, raw);
        if (spModelPath is not null)
        {
            // SentencePiece flavour with its tokenizer.model beside it: that file is the reference.
            var sp = SentencePieceModels.FromModelFile(spModelPath, added);
            var files = new Dictionary<string, byte[]>(sp.ModelFiles) { [TokenizerJson] = raw };
            return sp with { ModelFiles = files, AddBos = AddsBos(root) ?? sp.AddBos };
        }
        if (type == "BPE")
            return SentencePieceModels.FromTokenizerJson(path, root, model, added, raw) with { AddBos = AddsBos(root) ?? true };
        throw new TokenizerLoadException(
            $"{path}: tokenizer model type \"{type}\" is not supported; RlhfStudio reads byte-level BPE and SentencePiece " +
            $"BPE tokenizer.json files, or a SentencePiece {TokenizerModel}");
    }

    private static TokenizerParts ByteLevel(string path, JsonObject root, JsonObject model, List<AddedToken> added, byte[] raw)
    {
        var vocab = ParseVocab(path, model);
        var merges = ParseMerges(path, model);
        var (preTokenizer, addPrefixSpace) = ParsePreTokenizer(path, root["pre_tokenizer"]);
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = preTokenizer,
            Normalizer = ParseNormalizer(path, root["normalizer"]),
        };
        if (GetString(model["continuing_subword_prefix"]) is { Length: > 0 } prefix) options.ContinuingSubwordPrefix = prefix;
        if (GetString(model["end_of_word_suffix"]) is { Length: > 0 } suffix) options.EndOfWordSuffix = suffix;
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(options);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new TokenizerLoadException($"{path}: cannot build the BPE model: {ex.Message}", ex);
        }
        return new TokenizerParts(TokenizerKind.ByteLevelBpe, bpe, vocab, added, addPrefixSpace,
            new Dictionary<string, byte[]> { [TokenizerJson] = raw },
            DefaultEos: "<|endoftext|>", AddBos: AddsBos(root));
    }

    public static Dictionary<string, int> ParseVocab(string path, JsonObject model)
    {
        if (model["vocab"] is not JsonObject vocabNode)
            throw new TokenizerLoadException($"{path}: model.vocab must be an object of token -> id");
        var vocab = new Dictionary<string, int>(vocabNode.Count, StringComparer.Ordinal);
        foreach (var (token, idNode) in vocabNode)
            vocab[token] = GetInt(idNode) ?? throw new TokenizerLoadException($"{path}: model.vocab[\"{token}\"] must be an integer id");
        return vocab;
    }

    /// <summary>Merges as (left, right) pairs; tokenizer.json writes "a b" (older) or ["a", "b"] (newer).</summary>
    public static List<(string Left, string Right)> ParseMergePairs(string path, JsonObject model)
    {
        var pairs = new List<(string, string)>();
        if (model["merges"] is null) return pairs;
        if (model["merges"] is not JsonArray merges)
            throw new TokenizerLoadException($"{path}: model.merges must be a list");
        for (int i = 0; i < merges.Count; i++)
        {
            var m = merges[i];
            if (GetString(m) is { } s && s.IndexOf(' ', 1) is var space and > 0)
                pairs.Add((s[..space], s[(space + 1)..]));
            else if (m is JsonArray { Count: 2 } a && GetString(a[0]) is { } l && GetString(a[1]) is { } r)
                pairs.Add((l, r));
            else
                throw new TokenizerLoadException($"{path}: model.merges[{i}] must be \"left right\" or [\"left\", \"right\"]");
        }
        return pairs;
    }

    private static List<string> ParseMerges(string path, JsonObject model) =>
        ParseMergePairs(path, model).Select(p => p.Left + " " + p.Right).ToList();

    public static List<AddedToken> ParseAddedTokens(string path, JsonObject root)
    {
        var result = new List<AddedToken>();
        if (root["added_tokens"] is null) return result;
        if (root["added_tokens"] is not JsonArray list)
            throw new TokenizerLoadException($"{path}: added_tokens must be a list");
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] is not JsonObject o || GetInt(o["id"]) is not int id || GetString(o["content"]) is not { } content)
                throw new TokenizerLoadException($"{path}: added_tokens[{i}] needs an integer \"id\" and a \"content\" string");
            result.Add(new AddedToken(id, content, GetBool(o["special"]) ?? false));
        }
        return result;
    }

    private static List<AddedToken> MergeAdded(List<AddedToken> fromJson, IReadOnlyList<AddedToken> fromConfig)
    {
        var result = fromJson.ToList();
        foreach (var t in fromConfig)
            if (!result.Any(a => a.Id == t.Id)) result.Add(t);
        return result;
    }

    private static IEnumerable<JsonObject> Flatten(JsonNode? node, string listKey)
    {
        if (node is not JsonObject o) yield break;
        yield return o;
        if (o[listKey] is JsonArray children)
            foreach (var child in children)
                foreach (var inner in Flatten(child, listKey))
                    yield return inner;
    }

    private static bool IsByteLevel(JsonObject root) =>
        Flatten(root["pre_tokenizer"], "pretokenizers").Concat(Flatten(root["decoder"], "decoders"))
            .Any(o => GetString(o["type"]) == "ByteLevel");

    /// <summary>Whether the post-processor puts a special token first (Llama 3's &lt;|begin_of_text|&gt;).</summary>
    private static bool? AddsBos(JsonObject root)
    {
        foreach (var p in Flatten(root["post_processor"], "processors"))
            if (GetString(p["type"]) == "TemplateProcessing" && p["single"] is JsonArray single)
                return single.Count > 0 && Prop(single[0], "SpecialToken") is not null;
        return null;
    }

    private static (PreTokenizer? PreTokenizer, bool AddPrefixSpace) ParsePreTokenizer(string path, JsonNode? node)
    {
        var patterns = new List<Regex>();
        bool addPrefixSpace = false;
        foreach (var pt in Flatten(node, "pretokenizers"))
        {
            var type = GetString(pt["type"]);
            switch (type)
            {
                case "Sequence":
                    break;
                case "ByteLevel":
                    addPrefixSpace |= GetBool(pt["add_prefix_space"]) ?? false;
                    if (GetBool(pt["use_regex"]) ?? true) patterns.Add(NewRegex(path, Gpt2Pattern));
                    break;
                case "Split":
                    var behavior = GetString(pt["behavior"]) ?? "Isolated";
                    if (behavior != "Isolated" || (GetBool(pt["invert"]) ?? false))
                        throw new TokenizerLoadException($"{path}: pre_tokenizer Split with behavior \"{behavior}\"" +
                            $"{((GetBool(pt["invert"]) ?? false) ? " and invert" : "")} is not supported (only Isolated)");
                    var pattern = GetString(Prop(pt["pattern"], "Regex")) ?? (GetString(Prop(pt["pattern"], "String")) is { } literal ? Regex.Escape(literal) : null)
                        ?? throw new TokenizerLoadException($"{path}: pre_tokenizer Split needs pattern.Regex or pattern.String");
                    patterns.Add(NewRegex(path, pattern));
                    break;
                case "Digits":
                    patterns.Add(NewRegex(path, (GetBool(pt["individual_digits"]) ?? false) ? @"\p{N}" : @"\p{N}+"));
                    break;
                default:
                    throw new TokenizerLoadException($"{path}: pre_tokenizer type \"{type}\" is not supported with byte-level BPE");
            }
        }
        return (patterns.Count == 0 ? null : new IsolatedSplitPreTokenizer(patterns), addPrefixSpace);
    }

    private static Regex NewRegex(string path, string pattern)
    {
        try
        {
            return new Regex(pattern, RegexOptions.CultureInvariant);
        }
        catch (ArgumentException ex)
        {
            throw new TokenizerLoadException($"{path}: pre_tokenizer regex cannot be used in .NET: {ex.Message}", ex);
        }
    }

    private static Normalizer? ParseNormalizer(string path, JsonNode? node)
    {
        var steps = new List<Func<string, string>>();
        foreach (var n in Flatten(node, "normalizers"))
        {
            var type = GetString(n["type"]);
            switch (type)
            {
                case "Sequence": break;
                case "NFC": steps.Add(s => s.Normalize(NormalizationForm.FormC)); break;
                case "NFD": steps.Add(s => s.Normalize(NormalizationForm.FormD)); break;
                case "NFKC": steps.Add(s => s.Normalize(NormalizationForm.FormKC)); break;
                case "NFKD": steps.Add(s => s.Normalize(NormalizationForm.FormKD)); break;
                case "Lowercase": steps.Add(s => s.ToLower(CultureInfo.InvariantCulture)); break;
                default:
                    throw new TokenizerLoadException($"{path}: normalizer type \"{type}\" is not supported with byte-level BPE");
            }
        }
        return steps.Count == 0 ? null : new FuncNormalizer(steps);
    }

    private sealed class FuncNormalizer(List<Func<string, string>> steps) : Normalizer
    {
        public override string Normalize(string original) => steps.Aggregate(original, (s, f) => f(s));
        public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
    }
}

/// <summary>HF's Split pre-tokenizer with behavior "Isolated": every match is a piece and so is every gap
/// between matches (the library's RegexPreTokenizer would drop gaps). Several patterns apply in turn.</summary>
internal sealed class IsolatedSplitPreTokenizer(IReadOnlyList<Regex> patterns) : PreTokenizer
{
    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        var pieces = new List<(int Offset, int Length)> { (0, text.Length) };
        foreach (var regex in patterns)
        {
            var next = new List<(int, int)>(pieces.Count * 2);
            foreach (var (offset, length) in pieces)
            {
                int pos = offset;
                for (var m = regex.Match(text, offset, length); m.Success; m = m.NextMatch())
                {
                    if (m.Length == 0) continue;
                    if (m.Index > pos) next.Add((pos, m.Index - pos));
                    next.Add((m.Index, m.Length));
                    pos = m.Index + m.Length;
                }
                if (pos < offset + length) next.Add((pos, offset + length - pos));
            }
            pieces = next;
        }
        return pieces.Where(p => p.Length > 0);
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => PreTokenize(text.ToString());
}
