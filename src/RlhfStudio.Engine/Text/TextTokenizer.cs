// The one tokenizer type the engine uses. It wraps a Microsoft.ML.Tokenizers model (byte-level BPE or
// SentencePiece) and adds what that library leaves to us: Hugging Face folder loading, added/special
// tokens matched in text, bos/eos/pad/unk resolution as transformers does it, and saving a folder that
// both this class and transformers can load again.
//
// Encoding splits the text around added tokens first (as HF does), then encodes each plain segment with
// the model; the model itself is built without special tokens and never adds BOS/EOS on its own.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace RlhfStudio.Engine.Text;

/// <summary>Which kind of model does the encoding.</summary>
public enum TokenizerKind { ByteLevelBpe, SentencePiece }

/// <summary>A tokenizer folder or file could not be loaded; the message names the file and the problem.</summary>
public sealed class TokenizerLoadException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A token added on top of the model's vocabulary (HF <c>added_tokens</c>); matched whole in text.</summary>
/// <param name="Special">Special tokens are skipped by <see cref="TextTokenizer.Decode"/> by default.</param>
public sealed record AddedToken(int Id, string Content, bool Special);

public sealed class TextTokenizer
{
    private readonly Tokenizer _model;
    private readonly IReadOnlyDictionary<string, int> _vocab;
    private readonly Dictionary<string, int> _added = new(StringComparer.Ordinal);
    private readonly Dictionary<int, string> _addedById = [];
    private readonly HashSet<int> _special = [];
    private readonly Regex? _addedPattern;
    private readonly bool _addPrefixSpace;
    private readonly IReadOnlyDictionary<string, byte[]> _modelFiles;
    private readonly JsonObject _config;
    private Dictionary<int, string>? _idToToken;

    internal TextTokenizer(TokenizerParts parts, SpecialTokens specials, JsonObject config, string? chatTemplate)
    {
        Kind = parts.Kind;
        _model = parts.Model;
        _vocab = parts.Vocabulary;
        _addPrefixSpace = parts.AddPrefixSpace;
        _modelFiles = parts.ModelFiles;
        _config = config;
        ChatTemplate = chatTemplate;
        AddBosByDefault = specials.AddBos;

        foreach (var t in parts.AddedTokens)
        {
            _added[t.Content] = t.Id;
            _addedById[t.Id] = t.Content;
            if (t.Special) _special.Add(t.Id);
        }
        AddedTokens = parts.AddedTokens;
        // Longest first, so "<|im_end|>" wins over a shorter token that is its prefix (HF: leftmost-longest).
        if (_added.Count > 0)
            _addedPattern = new Regex(string.Join("|", _added.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)),
                RegexOptions.CultureInvariant);

        (BosToken, BosId) = Resolve(specials.Bos);
        (EosToken, EosId) = Resolve(specials.Eos);
        (UnkToken, UnkId) = Resolve(specials.Unk);
        (PadToken, PadId) = specials.Pad is null ? (EosToken, EosId) : Resolve(specials.Pad);
        PadIsEos = PadId is not null && PadId == EosId;
        foreach (var id in new[] { BosId, EosId, PadId, UnkId })
            if (id is int i) _special.Add(i);

        int maxId = -1;
        foreach (var id in _vocab.Values) maxId = Math.Max(maxId, id);
        foreach (var id in _addedById.Keys) maxId = Math.Max(maxId, id);
        VocabSize = maxId + 1;
    }

    private (string?, int?) Resolve(NamedToken? token) => token is null ? (null, null) : (token.Content, token.Id);

    public TokenizerKind Kind { get; }

    /// <summary>Number of ids (largest id + 1), counting added tokens: HF's <c>len(tokenizer)</c>.</summary>
    public int VocabSize { get; }

    public string? BosToken { get; }
    public int? BosId { get; }
    public string? EosToken { get; }
    public int? EosId { get; }
    public string? UnkToken { get; }
    public int? UnkId { get; }
    /// <summary>The padding token; the EOS token when none is configured (as TRL does).</summary>
    public string? PadToken { get; }
    public int? PadId { get; }
    /// <summary>Pad and EOS share one id (configured so, or fallen back because no pad token was set).
    /// Training must then mask by position, never by comparing ids with <see cref="PadId"/>.</summary>
    public bool PadIsEos { get; }

    /// <summary>Whether the model expects BOS at the start of a sequence (HF <c>add_bos_token</c>, or a
    /// post-processor that adds it). Templates follow this; <see cref="Encode"/> adds BOS only when asked.</summary>
    public bool AddBosByDefault { get; }

    /// <summary>The Jinja chat template from tokenizer_config.json, if any (not executed; used to pick a template).</summary>
    public string? ChatTemplate { get; }

    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Encodes text; added tokens in the text (e.g. "&lt;|im_end|&gt;") become their single ids.
    /// No BOS/EOS is added unless <paramref name="addBos"/> is set and the tokenizer has a BOS token.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        var ids = new List<int>();
        if (addBos && BosId is int bos) ids.Add(bos);
        if (text.Length == 0) return ids;
        int pos = 0;
        if (_addedPattern is not null)
        {
            for (var m = _addedPattern.Match(text); m.Success; m = m.NextMatch())
            {
                EncodeSegment(text[pos..m.Index], ids);
                ids.Add(_added[m.Value]);
                pos = m.Index + m.Length;
            }
        }
        EncodeSegment(text[pos..], ids);
        return ids;
    }

    private void EncodeSegment(string segment, List<int> ids)
    {
        if (segment.Length == 0) return;
        if (_addPrefixSpace && !char.IsWhiteSpace(segment[0])) segment = " " + segment;
        ids.AddRange(_model.EncodeToIds(segment, considerPreTokenization: true, considerNormalization: true));
    }

    public int CountTokens(string text) => Encode(text).Count;

    /// <summary>Decodes ids to text. Special tokens are dropped by default; otherwise added tokens are
    /// written as their text.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var sb = new StringBuilder();
        var run = new List<int>();
        foreach (var id in ids)
        {
            if (skipSpecialTokens && _special.Contains(id)) continue;
            if (_addedById.TryGetValue(id, out var content) || (_special.Contains(id) && TryIdToToken(id, out content)))
            {
                Flush();
                sb.Append(content);
            }
            else run.Add(id);
        }
        Flush();
        return sb.ToString();

        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(_model.Decode(run));
            run.Clear();
        }
    }

    /// <summary>True for the ids of special tokens: bos/eos/pad/unk and added tokens marked special.</summary>
    public bool IsSpecial(int id) => _special.Contains(id);

    /// <summary>The id of a vocabulary entry or added token given in the model's own spelling.</summary>
    public int? TokenToId(string token) =>
        _added.TryGetValue(token, out var id) ? id : _vocab.TryGetValue(token, out id) ? id : null;

    /// <summary>The model's own spelling of an id (byte-level tokens use GPT-2's byte alphabet, e.g. "Ġthe").</summary>
    public string? IdToToken(int id) => TryIdToToken(id, out var t) ? t : null;

    private bool TryIdToToken(int id, out string token)
    {
        if (_addedById.TryGetValue(id, out token!)) return true;
        _idToToken ??= _vocab.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
        return _idToToken.TryGetValue(id, out token!);
    }

    /// <summary>Writes the tokenizer to a folder in Hugging Face layout: the model file(s) as loaded
    /// (tokenizer.json and/or tokenizer.model), tokenizer_config.json and special_tokens_map.json.</summary>
    public void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        foreach (var (name, bytes) in _modelFiles)
            File.WriteAllBytes(Path.Combine(folder, name), bytes);

        var config = (JsonObject)_config.DeepClone();
        var map = new JsonObject();
        foreach (var (key, value) in new[] { ("bos_token", BosToken), ("eos_token", EosToken), ("unk_token", UnkToken), ("pad_token", PadToken) })
        {
            config[key] = value;
            if (value is not null) map[key] = value;
        }
        config["add_bos_token"] = AddBosByDefault;
        if (ChatTemplate is not null) config["chat_template"] = ChatTemplate;
        if (!config.ContainsKey("tokenizer_class"))
            config["tokenizer_class"] = _modelFiles.ContainsKey(TokenizerFiles.TokenizerJson) ? "PreTrainedTokenizerFast" : "LlamaTokenizer";
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        File.WriteAllText(Path.Combine(folder, TokenizerFiles.TokenizerConfig), config.ToJsonString(options));
        File.WriteAllText(Path.Combine(folder, TokenizerFiles.SpecialTokensMap), map.ToJsonString(options));
    }

    /// <summary>Loads a Hugging Face tokenizer folder: tokenizer.json (byte-level BPE, or the
    /// SentencePiece-style BPE of Llama 2) or tokenizer.model (SentencePiece), with the special tokens
    /// from tokenizer_config.json, special_tokens_map.json, generation_config.json and config.json.</summary>
    /// <exception cref="TokenizerLoadException">Missing or malformed files; the message names the file.</exception>
    public static TextTokenizer Load(string folder) => TokenizerFiles.Load(folder);

    /// <summary>The built-in byte-level tokenizer of the built-in tiny models; needs no files.</summary>
    public static TextTokenizer BuiltIn() => BuiltInTokenizer.Create();

    public override string ToString() =>
        $"{Kind} tokenizer, {VocabSize} ids, bos={BosToken ?? "-"} eos={EosToken ?? "-"} pad={PadToken ?? "-"}{(PadIsEos ? " (=eos)" : "")}";
}
