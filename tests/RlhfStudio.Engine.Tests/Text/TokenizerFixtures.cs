// Small tokenizer folders built in code: a GPT-2-style tokenizer.json, a Llama-3-style one (Split regex),
// a SentencePiece tokenizer.model written as protobuf bytes, and its tokenizer.json counterpart.
using System.Text.Json.Nodes;
using Google.Protobuf;

namespace RlhfStudio.Engine.Tests.Text;

public sealed class TempFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("rlhf-tok-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Write(string name, string text) => System.IO.File.WriteAllText(File(name), text);
    public void Write(string name, JsonNode json) => Write(name, json.ToJsonString());
    public void Dispose() => Directory.Delete(Path, recursive: true);
}

public static class TokenizerFixtures
{
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>GPT-2's bytes_to_unicode, written out independently of the engine's copy.</summary>
    public static string ByteChar(int b)
    {
        var printable = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range(0xA1, 12)).Concat(Enumerable.Range(0xAE, 82)).ToList();
        if (printable.Contains(b)) return ((char)b).ToString();
        int n = Enumerable.Range(0, b).Count(x => !printable.Contains(x));
        return ((char)(256 + n)).ToString();
    }

    /// <summary>Byte-level vocab: ids 0-255 = bytes, then one id per merge, then added tokens.
    /// GPT-2 style: Ġt(256) Ġth(257) Ġthe(258) he(259) ll(260), &lt;|endoftext|&gt;(261), &lt;|im_start|&gt;(262), &lt;|im_end|&gt;(263).</summary>
    public static JsonObject ByteLevelJson(string[][] merges, string[] added, JsonNode preTokenizer, bool mergesAsArrays, JsonNode? postProcessor = null)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteChar(b)] = b;
        int next = 256;
        foreach (var m in merges) vocab[m[0] + m[1]] = next++;
        var addedList = new JsonArray();
        foreach (var a in added)
        {
            vocab[a] = next;
            addedList.Add(new JsonObject { ["id"] = next++, ["content"] = a, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
        }
        var mergeNodes = new JsonArray(merges.Select(m => mergesAsArrays ? (JsonNode)new JsonArray(m[0], m[1]) : JsonValue.Create(m[0] + " " + m[1])).ToArray());
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = addedList,
            ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = postProcessor,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = mergeNodes },
        };
    }

    public static readonly string[][] Gpt2Merges = [["Ġ", "t"], ["Ġt", "h"], ["Ġth", "e"], ["h", "e"], ["l", "l"]];

    public static JsonObject Gpt2Json(bool mergesAsArrays = false) => ByteLevelJson(Gpt2Merges,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
        mergesAsArrays);

    /// <summary>Llama-3 style: Split(regex) then ByteLevel(use_regex=false); merges Ġ1(256) 12(257);
    /// &lt;|begin_of_text|&gt;(258) &lt;|eot_id|&gt;(259); the post-processor adds BOS.</summary>
    public static JsonObject Llama3Json() => ByteLevelJson([["Ġ", "1"], ["1", "2"]], ["<|begin_of_text|>", "<|eot_id|>"],
        new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Llama3Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        },
        mergesAsArrays: true,
        postProcessor: new JsonObject
        {
            ["type"] = "TemplateProcessing",
            ["single"] = new JsonArray(
                new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<|begin_of_text|>", ["type_id"] = 0 } },
                new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
        });

    // SentencePiece: <unk> <s> </s>, 256 byte pieces, then normal pieces whose score orders the merges.
    public static readonly string[] SpPieces = ["▁t", "he", "▁the", "▁a", "▁", "t", "h", "e", "a", "c", "l", "o"];
    public static readonly string[][] SpMerges = [["▁", "t"], ["h", "e"], ["▁t", "he"], ["▁", "a"]];

    public static byte[] SentencePieceModel()
    {
        var pieces = new List<(string, float, int)> { ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3) };
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, 6));
        for (int i = 0; i < SpPieces.Length; i++) pieces.Add((SpPieces[i], -i, 1));
        using var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        foreach (var (piece, score, type) in pieces)
            Message(o, 1, m =>
            {
                m.WriteTag(1, WireFormat.WireType.LengthDelimited); m.WriteString(piece);
                m.WriteTag(2, WireFormat.WireType.Fixed32); m.WriteFloat(score);
                m.WriteTag(3, WireFormat.WireType.Varint); m.WriteInt32(type);
            });
        Message(o, 2, m =>  // trainer_spec: BPE, byte_fallback, unk/bos/eos ids
        {
            m.WriteTag(3, WireFormat.WireType.Varint); m.WriteInt32(2);
            m.WriteTag(35, WireFormat.WireType.Varint); m.WriteBool(true);
            m.WriteTag(40, WireFormat.WireType.Varint); m.WriteInt32(0);
            m.WriteTag(41, WireFormat.WireType.Varint); m.WriteInt32(1);
            m.WriteTag(42, WireFormat.WireType.Varint); m.WriteInt32(2);
        });
        Message(o, 3, m =>  // normalizer_spec: identity, add_dummy_prefix, escape_whitespaces
        {
            m.WriteTag(1, WireFormat.WireType.LengthDelimited); m.WriteString("identity");
            m.WriteTag(3, WireFormat.WireType.Varint); m.WriteBool(true);
            m.WriteTag(4, WireFormat.WireType.Varint); m.WriteBool(false);
            m.WriteTag(5, WireFormat.WireType.Varint); m.WriteBool(true);
        });
        o.Flush();
        return ms.ToArray();
    }

    private static void Message(CodedOutputStream o, int field, Action<CodedOutputStream> write)
    {
        using var inner = new MemoryStream();
        var m = new CodedOutputStream(inner);
        write(m);
        m.Flush();
        o.WriteTag(field, WireFormat.WireType.LengthDelimited);
        o.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
    }

    /// <summary>The same SentencePiece vocabulary as HF's Llama-2-style tokenizer.json.</summary>
    public static JsonObject SentencePieceJson()
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = 3 + b;
        for (int i = 0; i < SpPieces.Length; i++) vocab[SpPieces[i]] = 259 + i;
        JsonObject Added(int id, string content) => new() { ["id"] = id, ["content"] = content, ["special"] = true };
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>")),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["pre_tokenizer"] = null,
            ["decoder"] = new JsonObject { ["type"] = "Sequence", ["decoders"] = new JsonArray(new JsonObject { ["type"] = "ByteFallback" }) },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["byte_fallback"] = true, ["fuse_unk"] = true, ["vocab"] = vocab,
                ["merges"] = new JsonArray(SpMerges.Select(m => (JsonNode)JsonValue.Create(m[0] + " " + m[1])).ToArray()),
            },
        };
    }
}
