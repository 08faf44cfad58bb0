// SentencePiece tokenizers (Llama 2, TinyLlama, Mistral).
//   tokenizer.model: the protobuf ModelProto, read by LlamaTokenizer.Create.
//   tokenizer.json of the same models (BPE with byte_fallback, "▁" for spaces): Microsoft.ML.Tokenizers'
//   BpeTokenizer has no byte fallback, so we rebuild the ModelProto from vocab + merges and read that.
//   SentencePiece BPE merges by the score of the merged piece; HF's converter wrote the merges in score
//   order, so piece score = -(rank of the first merge that makes it) reproduces it.
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Microsoft.ML.Tokenizers;
using static RlhfStudio.Engine.Text.TokenizerFiles;

namespace RlhfStudio.Engine.Text;

internal static partial class SentencePieceModels
{
    public static TokenizerParts FromModelFile(string path, IReadOnlyList<AddedToken> added) =>
        FromModelBytes(path, File.ReadAllBytes(path), added, TokenizerModel);

    private static TokenizerParts FromModelBytes(string path, byte[] bytes, IReadOnlyList<AddedToken> added, string? saveAs)
    {
        SentencePieceTokenizer sp;
        try
        {
            sp = LlamaTokenizer.Create(new MemoryStream(bytes), addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception ex) when (ex is InvalidProtocolBufferException or ArgumentException or InvalidOperationException
                                       or NotSupportedException or IndexOutOfRangeException)
        {
            throw new TokenizerLoadException(
                $"{path}: not a SentencePiece model ({ex.Message}). Llama 3's tokenizer.model is in tiktoken format: use its tokenizer.json", ex);
        }
        string? Piece(int id) => id >= 0 && id < sp.Vocabulary.Count ? sp.Vocabulary.FirstOrDefault(kv => kv.Value == id).Key : null;
        return new TokenizerParts(TokenizerKind.SentencePiece, sp, sp.Vocabulary, added, AddPrefixSpace: false,
            saveAs is null ? new Dictionary<string, byte[]>() : new Dictionary<string, byte[]> { [saveAs] = bytes },
            DefaultBos: Piece(sp.BeginningOfSentenceId), DefaultEos: Piece(sp.EndOfSentenceId), DefaultUnk: Piece(sp.UnknownId),
            AddBos: true);
    }

    public static TokenizerParts FromTokenizerJson(string path, JsonObject root, JsonObject model, IReadOnlyList<AddedToken> added, byte[] raw)
    {
        var vocab = TokenizerJsonModel.ParseVocab(path, model);
        var merges = TokenizerJsonModel.ParseMergePairs(path, model);
        bool byteFallback = GetBool(model["byte_fallback"]) ?? false;
        bool metaspace = ContainsType(root["normalizer"], "normalizers", "Prepend") || ContainsType(root["normalizer"], "normalizers", "Replace")
                         || ContainsType(root["pre_tokenizer"], "pretokenizers", "Metaspace");
        if (!byteFallback && !metaspace)
            throw new TokenizerLoadException(
                $"{path}: BPE without byte-level encoding or SentencePiece markers is not supported; provide the model's {TokenizerModel}");

        var pieces = new string[vocab.Count];
        foreach (var (token, id) in vocab)
        {
            if (id < 0 || id >= pieces.Length || pieces[id] is not null)
                throw new TokenizerLoadException($"{path}: model.vocab ids must be 0..{pieces.Length - 1} without gaps to rebuild a SentencePiece model");
            pieces[id] = token;
        }
        var rank = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < merges.Count; i++)
            rank.TryAdd(merges[i].Left + merges[i].Right, i);
        var special = added.Where(a => a.Special).Select(a => a.Content).ToHashSet();
        var unk = GetString(model["unk_token"]);

        var proto = new List<(string Piece, float Score, int Type)>(pieces.Length);
        foreach (var piece in pieces)
        {
            int type = piece == unk ? 2 : special.Contains(piece) ? 3 : byteFallback && BytePiece().IsMatch(piece) ? 6 : 1;
            float score = type == 1 ? -(rank.TryGetValue(piece, out var r) ? r : merges.Count) : 0f;
            proto.Add((piece, score, type));
        }
        int IdOf(string? token) => token is not null && vocab.TryGetValue(token, out var id) ? id : -1;
        var bytes = WriteModelProto(proto, byteFallback, IdOf(unk), IdOf("<s>"), IdOf("</s>"), addDummyPrefix: AddsDummyPrefix(root));
        return FromModelBytes(path, bytes, added, saveAs: null) with { ModelFiles = new Dictionary<string, byte[]> { [TokenizerJson] = raw } };
    }

    private static bool AddsDummyPrefix(JsonObject root)
    {
        foreach (var n in Flatten(root["normalizer"], "normalizers"))
            if (GetString(n["type"]) == "Prepend") return true;
        foreach (var p in Flatten(root["pre_tokenizer"], "pretokenizers"))
            if (GetString(p["type"]) == "Metaspace")
                return GetString(p["prepend_scheme"]) is { } scheme ? scheme != "never" : GetBool(p["add_prefix_space"]) ?? true;
        return false;
    }

    private static bool ContainsType(JsonNode? node, string listKey, string type) =>
        Flatten(node, listKey).Any(o => GetString(o["type"]) == type);

    private static IEnumerable<JsonObject> Flatten(JsonNode? node, string listKey)
    {
        if (node is not JsonObject o) yield break;
        yield return o;
        if (o[listKey] is JsonArray children)
            foreach (var child in children)
                foreach (var inner in Flatten(child, listKey))
                    yield return inner;
    }

    [GeneratedRegex("^<0x[0-9A-Fa-f]{2}>$")]
    private static partial Regex BytePiece();

    /// <summary>Writes a sentencepiece_model.proto ModelProto: pieces (1), trainer_spec (2), normalizer_spec (3).</summary>
    public static byte[] WriteModelProto(IReadOnlyList<(string Piece, float Score, int Type)> pieces, bool byteFallback,
        int unkId, int bosId, int eosId, bool addDummyPrefix)
    {
        using var ms = new MemoryStream();
        var output = new CodedOutputStream(ms);
        foreach (var (piece, score, type) in pieces)
            WriteMessage(output, 1, o =>
            {
                o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString(piece);
                o.WriteTag(2, WireFormat.WireType.Fixed32); o.WriteFloat(score);
                o.WriteTag(3, WireFormat.WireType.Varint); o.WriteInt32(type);
            });
        WriteMessage(output, 2, o =>
        {
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteInt32(2); // model_type = BPE
            o.WriteTag(35, WireFormat.WireType.Varint); o.WriteBool(byteFallback);
            o.WriteTag(40, WireFormat.WireType.Varint); o.WriteInt32(unkId);
            o.WriteTag(41, WireFormat.WireType.Varint); o.WriteInt32(bosId);
            o.WriteTag(42, WireFormat.WireType.Varint); o.WriteInt32(eosId);
            o.WriteTag(43, WireFormat.WireType.Varint); o.WriteInt32(-1);   // pad_id
        });
        WriteMessage(output, 3, o =>
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString("identity");
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteBool(addDummyPrefix);
            o.WriteTag(4, WireFormat.WireType.Varint); o.WriteBool(false); // remove_extra_whitespaces
            o.WriteTag(5, WireFormat.WireType.Varint); o.WriteBool(true);  // escape_whitespaces
        });
        output.Flush();
        return ms.ToArray();
    }

    private static void WriteMessage(CodedOutputStream output, int field, Action<CodedOutputStream> write)
    {
        using var inner = new MemoryStream();
        var o = new CodedOutputStream(inner);
        write(o);
        o.Flush();
        output.WriteTag(field, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
    }
}
