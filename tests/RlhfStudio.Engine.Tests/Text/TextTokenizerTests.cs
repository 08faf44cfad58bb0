using System.Text.Json.Nodes;
using RlhfStudio.Engine.Text;
using static RlhfStudio.Engine.Tests.Text.TokenizerFixtures;

namespace RlhfStudio.Engine.Tests.Text;

public class TextTokenizerTests
{
    private static TextTokenizer LoadGpt2(TempFolder dir, bool mergesAsArrays = false, JsonObject? config = null)
    {
        dir.Write("tokenizer.json", Gpt2Json(mergesAsArrays));
        if (config is not null) dir.Write("tokenizer_config.json", config);
        return TextTokenizer.Load(dir.Path);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gpt2_style_json_encodes_with_merges_in_both_forms(bool mergesAsArrays)
    {
        using var dir = new TempFolder();
        var tok = LoadGpt2(dir, mergesAsArrays);
        // hello -> he ll o ; " the" -> Ġthe ; " world" -> Ġ w o r l d (bytes are their own ids)
        Assert.Equal([259, 260, 111, 258, 32, 119, 111, 114, 108, 100], tok.Encode("hello the world"));
        Assert.Equal(TokenizerKind.ByteLevelBpe, tok.Kind);
        Assert.Equal(264, tok.VocabSize);
    }

    [Fact]
    public void Gpt2_regex_splits_whitespace_like_hf()
    {
        using var dir = new TempFolder();
        var tok = LoadGpt2(dir);
        // "a\n\nb  c": \s+(?!\S) keeps one "\n" and one " " apart from the next word.
        Assert.Equal([97, 10, 10, 98, 32, 32, 99], tok.Encode("a\n\nb  c"));
    }

    [Fact]
    public void Added_special_tokens_encode_as_single_ids_and_decode()
    {
        using var dir = new TempFolder();
        var tok = LoadGpt2(dir);
        var ids = tok.Encode("<|im_start|>user\nhi<|im_end|><|endoftext|>");
        Assert.Equal([262, 117, 115, 101, 114, 10, 104, 105, 263, 261], ids);
        Assert.Equal("<|im_start|>user\nhi<|im_end|><|endoftext|>", tok.Decode(ids, skipSpecialTokens: false));
        Assert.Equal("user\nhi", tok.Decode(ids));
        Assert.True(tok.IsSpecial(263));
        Assert.False(tok.IsSpecial(104));
    }

    [Theory]
    [InlineData("héllo wörld 😀 日本語")]
    [InlineData(" leading and trailing  \n\t ")]
    [InlineData("it's 12,345.6 — ok?")]
    public void Byte_level_round_trips_unicode(string text)
    {
        using var dir = new TempFolder();
        var tok = LoadGpt2(dir);
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
        Assert.Equal(tok.Encode(text).Count, tok.CountTokens(text));
    }

    [Fact]
    public void Llama3_style_split_regex_is_used_instead_of_gpt2()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", Llama3Json());
        dir.Write("tokenizer_config.json", new JsonObject
        {
            ["bos_token"] = new JsonObject { ["content"] = "<|begin_of_text|>", ["lstrip"] = false, ["special"] = true },
            ["eos_token"] = "<|eot_id|>",
        });
        var tok = TextTokenizer.Load(dir.Path);
        // Llama 3's regex isolates " " and splits digits in threes: "x", " ", "123", "45" -> 12 3 4 5.
        // GPT-2's regex would give " 12345" -> Ġ1 2 3 4 5.
        Assert.Equal([(int)'x', 32, 257, (int)'3', (int)'4', (int)'5'], tok.Encode("x 12345"));
        Assert.Equal(258, tok.BosId);
        Assert.Equal(259, tok.EosId);
        Assert.True(tok.AddBosByDefault);
        Assert.Equal([258, (int)'x'], tok.Encode("x", addBos: true));
        Assert.Equal([(int)'x'], tok.Encode("x"));
    }

    [Fact]
    public void Special_tokens_come_from_config_strings_and_objects_and_pad_falls_back_to_eos()
    {
        using var dir = new TempFolder();
        var tok = LoadGpt2(dir, config: new JsonObject
        {
            ["bos_token"] = new JsonObject { ["content"] = "<|im_start|>", ["special"] = true },
            ["eos_token"] = "<|im_end|>",
            ["pad_token"] = null,
        });
        Assert.Equal(("<|im_start|>", 262), (tok.BosToken, tok.BosId));
        Assert.Equal(("<|im_end|>", 263), (tok.EosToken, tok.EosId));
        Assert.Equal(("<|im_end|>", 263), (tok.PadToken, tok.PadId));
        Assert.True(tok.PadIsEos);
    }

    [Fact]
    public void Explicit_pad_token_is_not_eos()
    {
        using var dir = new TempFolder();
        var tok = LoadGpt2(dir, config: new JsonObject { ["eos_token"] = "<|endoftext|>", ["pad_token"] = "<|im_start|>" });
        Assert.Equal(262, tok.PadId);
        Assert.False(tok.PadIsEos);
    }

    [Fact]
    public void Special_tokens_map_and_generation_config_ids_are_used_when_config_lacks_them()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", Gpt2Json());
        dir.Write("special_tokens_map.json", new JsonObject { ["bos_token"] = "<|im_start|>" });
        dir.Write("generation_config.json", new JsonObject { ["eos_token_id"] = new JsonArray(263, 261) });
        dir.Write("config.json", new JsonObject { ["eos_token_id"] = 261, ["pad_token_id"] = 261 });
        var tok = TextTokenizer.Load(dir.Path);
        Assert.Equal(262, tok.BosId);
        Assert.Equal(("<|im_end|>", 263), (tok.EosToken, tok.EosId));
        Assert.Equal(261, tok.PadId);
        Assert.False(tok.PadIsEos);
    }

    [Fact]
    public void Chat_template_in_config_picks_the_default_template()
    {
        using var dir = new TempFolder();
        var chatml = LoadGpt2(dir, config: new JsonObject { ["chat_template"] = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% endfor %}" });
        Assert.Same(PromptTemplates.ChatMl, PromptTemplates.DefaultFor(chatml, "qwen2"));
        var llama = LoadGpt2(dir, config: new JsonObject { ["chat_template"] = "{{ bos_token + '[INST] ' + content + ' [/INST]' }}" });
        Assert.Same(PromptTemplates.Llama2, PromptTemplates.DefaultFor(llama, "llama"));
        var plain = LoadGpt2(dir, config: new JsonObject());
        Assert.Null(plain.ChatTemplate);
        Assert.Same(PromptTemplates.StackLlama, PromptTemplates.DefaultFor(plain, "gpt2"));
    }

    [Fact]
    public void SentencePiece_model_encodes_with_byte_fallback_and_its_own_bos_eos()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("tokenizer.model"), SentencePieceModel());
        var tok = TextTokenizer.Load(dir.Path);
        int Id(string piece) => tok.TokenToId(piece) ?? throw new Exception(piece);
        Assert.Equal(TokenizerKind.SentencePiece, tok.Kind);
        Assert.Equal([Id("▁the"), Id("▁"), Id("c"), Id("a"), Id("t")], tok.Encode("the cat"));
        Assert.Equal([Id("▁"), Id("<0xC3>"), Id("<0xA9>")], tok.Encode("é"));
        Assert.Equal(("<s>", 1), (tok.BosToken, tok.BosId));
        Assert.Equal(("</s>", 2), (tok.EosToken, tok.EosId));
        Assert.True(tok.PadIsEos);
        Assert.True(tok.AddBosByDefault);
        Assert.Equal([1, Id("▁the")], tok.Encode("the", addBos: true));
        Assert.Equal([Id("▁a"), 2], tok.Encode("a</s>"));
        foreach (var text in new[] { "the cat", "héllo 😀 日本", "a  b\nc" })
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void SentencePiece_flavoured_tokenizer_json_matches_the_model_file()
    {
        using var model = new TempFolder();
        File.WriteAllBytes(model.File("tokenizer.model"), SentencePieceModel());
        using var json = new TempFolder();
        json.Write("tokenizer.json", SentencePieceJson());
        var fromModel = TextTokenizer.Load(model.Path);
        var fromJson = TextTokenizer.Load(json.Path);
        Assert.Equal(TokenizerKind.SentencePiece, fromJson.Kind);
        foreach (var text in new[] { "the cat", "a the", "é😀", "<s>the</s>", "  two  spaces", "hello\nworld" })
        {
            Assert.Equal(fromModel.Encode(text), fromJson.Encode(text));
            Assert.Equal(fromModel.Decode(fromModel.Encode(text)), fromJson.Decode(fromJson.Encode(text)));
        }
        Assert.Equal((1, 2, 0), (fromJson.BosId, fromJson.EosId, fromJson.UnkId));
    }

    [Fact]
    public void Loaded_tokenizers_save_and_load_back_identically()
    {
        using var src = new TempFolder();
        File.WriteAllBytes(src.File("tokenizer.model"), SentencePieceModel());
        src.Write("tokenizer_config.json", new JsonObject { ["chat_template"] = "[INST] {{ x }}", ["pad_token"] = "<unk>" });
        var sp = TextTokenizer.Load(src.Path);
        using var saved = new TempFolder();
        sp.Save(saved.Path);
        Assert.True(File.Exists(saved.File("tokenizer.model")));
        var again = TextTokenizer.Load(saved.Path);
        Assert.Equal(sp.Encode("the cat é"), again.Encode("the cat é"));
        Assert.Equal((sp.BosId, sp.EosId, sp.PadId, sp.ChatTemplate), (again.BosId, again.EosId, again.PadId, again.ChatTemplate));
        Assert.Equal(0, again.PadId);
    }

    [Fact]
    public void Missing_folder_and_missing_files_are_named()
    {
        var ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load("/nonexistent/tok"));
        Assert.Contains("/nonexistent/tok", ex.Message);
        using var dir = new TempFolder();
        ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.Path, ex.Message);
        Assert.Contains("tokenizer.json", ex.Message);
        Assert.Contains("tokenizer.model", ex.Message);
    }

    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("tokenizer_config.json")]
    [InlineData("special_tokens_map.json")]
    [InlineData("generation_config.json")]
    public void Malformed_json_names_the_file(string file)
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", Gpt2Json());
        dir.Write(file, "{ \"eos_token\": ");
        var ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.File(file), ex.Message);
        Assert.Contains("malformed JSON", ex.Message);
    }

    [Fact]
    public void Unsupported_model_type_names_file_and_type()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", new JsonObject { ["model"] = new JsonObject { ["type"] = "WordPiece", ["vocab"] = new JsonObject { ["a"] = 0 } } });
        var ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer.json"), ex.Message);
        Assert.Contains("WordPiece", ex.Message);
    }

    [Fact]
    public void Bad_contents_name_the_file_and_the_field()
    {
        using var dir = new TempFolder();
        var json = Gpt2Json();
        ((JsonArray)json["model"]!["merges"]!).Add(42);
        dir.Write("tokenizer.json", json);
        var ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer.json"), ex.Message);
        Assert.Contains("merges[5]", ex.Message);

        dir.Write("tokenizer.json", Gpt2Json());
        dir.Write("tokenizer_config.json", new JsonObject { ["eos_token"] = "</s>" });
        ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer_config.json"), ex.Message);
        Assert.Contains("eos_token \"</s>\"", ex.Message);

        dir.Write("tokenizer_config.json", new JsonObject { ["eos_token"] = 5 });
        ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer_config.json"), ex.Message);
    }

    [Fact]
    public void Corrupt_sentencepiece_model_names_the_file()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("tokenizer.model"), [0x0A, 0xFF, 0xFF, 0x01, 0x02]);
        var ex = Assert.Throws<TokenizerLoadException>(() => TextTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer.model"), ex.Message);
    }
}
