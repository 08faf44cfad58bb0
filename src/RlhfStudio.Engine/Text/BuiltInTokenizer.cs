// The tokenizer of the built-in tiny models: GPT-2-style byte-level BPE defined entirely in code, so it
// needs no files and round-trips any UTF-8 text (every byte is a token). On top of the 256 byte tokens
// sit a few merges for the words of the built-in tasks ("Question", "Answer", " What", " is", ...) so
// that prompts stay short; no merge touches a digit, so every digit stays its own token (arithmetic
// tasks need that). It is built as a tokenizer.json and loaded through the same code as any HF folder,
// so Save() writes a tokenizer.json that transformers' PreTrainedTokenizerFast loads too.
//
// Ids: 0-255 the bytes (id = byte value), then one id per merge, then the special tokens.
// Changing the word list changes ids: models trained with the old list would no longer match.
using System.Text;
using System.Text.Json.Nodes;

namespace RlhfStudio.Engine.Text;

internal static class BuiltInTokenizer
{
    public const string EndOfText = "<|endoftext|>";
    public static readonly string[] SpecialTokens = [EndOfText, "<|im_start|>", "<|im_end|>"];

    // Words as they appear after GPT-2 pre-tokenization (a leading space belongs to the word).
    private static readonly string[] Words =
    [
        "Question", "Answer", " What", " is", " the", " of", " and", " to", " in", " a", " that", " it",
        " for", " you", " are", " with", " this", " be", " on", " as", " not", " can", " how", " many",
        " plus", " minus", " times", " divided", " by", " equals", " sum", " +", " -", " *", " /", " =",
        "user", "assistant", "system", "The", " I", "ing", "ed", "er", "es", "re", "on", "th",
    ];

    private static readonly Lazy<(JsonObject Json, byte[] Raw)> Definition = new(BuildJson);

    public static TextTokenizer Create()
    {
        var (json, raw) = Definition.Value;
        const string path = "built-in tokenizer";
        var parts = TokenizerJsonModel.FromJson(path, (JsonObject)json.DeepClone(), raw, spModelPath: null, configAdded: []);
        var config = new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["model_max_length"] = 1024,
            ["clean_up_tokenization_spaces"] = false,
            ["add_bos_token"] = false,
            ["bos_token"] = EndOfText,
            ["eos_token"] = EndOfText,
            ["pad_token"] = EndOfText,
        };
        return TokenizerFiles.Build(parts, [(path, config)], [], path, config, chatTemplate: null);
    }

    private static (JsonObject, byte[]) BuildJson()
    {
        var byteChar = ByteLevelAlphabet();
        var vocab = new JsonObject();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            ids[byteChar[b].ToString()] = b;
            vocab[byteChar[b].ToString()] = b;
        }
        // Each word is merged left to right: W o r d -> Wo r d -> Wor d -> Word.
        var merges = new JsonArray();
        foreach (var word in Words)
        {
            var symbols = Encoding.UTF8.GetBytes(word).Select(b => byteChar[b].ToString()).ToList();
            var left = symbols[0];
            foreach (var right in symbols.Skip(1))
            {
                var merged = left + right;
                if (!ids.ContainsKey(merged))
                {
                    ids[merged] = ids.Count;
                    vocab[merged] = ids[merged];
                    merges.Add(new JsonArray(left, right));
                }
                left = merged;
            }
        }
        var added = new JsonArray();
        foreach (var special in SpecialTokens)
        {
            ids[special] = ids.Count;
            vocab[special] = ids[special];
            added.Add(new JsonObject
            {
                ["id"] = ids[special], ["content"] = special, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        }
        JsonObject ByteLevel() => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true };
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevel(),
            ["post_processor"] = ByteLevel(),
            ["decoder"] = ByteLevel(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "", ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        var raw = Encoding.UTF8.GetBytes(json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        return (json, raw);
    }

    /// <summary>GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to U+0100 onwards.</summary>
    public static char[] ByteLevelAlphabet()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }
}
