using System.Text.Json.Nodes;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Tests.Text;

public class BuiltInTokenizerTests
{
    private static readonly TextTokenizer Tok = TextTokenizer.BuiltIn();

    [Theory]
    [InlineData("Question: What is 12 + 7?\n\nAnswer: 19")]
    [InlineData("héllo wörld 😀 日本語 🇺🇸 ∑x²")]
    [InlineData("\u0000\u0001\t\r\n  trailing  ")]
    [InlineData("a<|endoftext|>b<|im_start|>c")]
    [InlineData("")]
    public void Round_trips_any_text_exactly(string text)
    {
        Assert.Equal(text, Tok.Decode(Tok.Encode(text), skipSpecialTokens: false));
    }

    [Fact]
    public void Specials_are_single_ids_and_pad_is_eos()
    {
        Assert.Equal("<|endoftext|>", Tok.EosToken);
        Assert.Equal(Tok.EosId, Tok.PadId);
        Assert.True(Tok.PadIsEos);
        Assert.False(Tok.AddBosByDefault);
        Assert.Equal([Tok.EosId!.Value], Tok.Encode("<|endoftext|>"));
        Assert.Single(Tok.Encode("<|im_end|>"));
        Assert.Equal("ab", Tok.Decode(Tok.Encode("a<|endoftext|>b")));
    }

    [Fact]
    public void Digits_stay_single_tokens_and_arithmetic_text_is_compact()
    {
        var text = "Question: What is 12 + 7?\n\nAnswer: 19";
        var ids = Tok.Encode(text);
        foreach (var id in ids)
        {
            var piece = Tok.Decode([id]);
            if (piece.Any(char.IsDigit)) Assert.Equal(1, piece.Length);
        }
        // Question : ĠWhat Ġis Ġ 1 2 Ġ+ Ġ 7 ? Ċ Ċ Answer : Ġ 1 9
        Assert.Equal(18, ids.Count);
        Assert.Equal(["Question", ":", " What", " is"], ids.Take(4).Select(i => Tok.Decode([i])));
    }

    [Fact]
    public void Is_deterministic_and_sized_as_bytes_plus_merges_plus_specials()
    {
        var other = TextTokenizer.BuiltIn();
        Assert.Equal(Tok.VocabSize, other.VocabSize);
        Assert.Equal(Tok.Encode("Question: What is the sum?"), other.Encode("Question: What is the sum?"));
        Assert.InRange(Tok.VocabSize, 256 + 3 + 50, 256 + 3 + 300);
        Assert.Equal(Tok.VocabSize - 3, Tok.EosId);
    }

    [Fact]
    public void Save_writes_hf_files_that_load_back_with_identical_ids()
    {
        using var dir = new TempFolder();
        Tok.Save(dir.Path);
        var json = JsonNode.Parse(File.ReadAllText(dir.File("tokenizer.json")))!;
        Assert.Equal("BPE", json["model"]!["type"]!.GetValue<string>());
        Assert.Equal("ByteLevel", json["pre_tokenizer"]!["type"]!.GetValue<string>());
        Assert.Equal(Tok.VocabSize, json["model"]!["vocab"]!.AsObject().Count);
        Assert.Equal(3, json["added_tokens"]!.AsArray().Count);
        var config = JsonNode.Parse(File.ReadAllText(dir.File("tokenizer_config.json")))!;
        Assert.Equal("PreTrainedTokenizerFast", config["tokenizer_class"]!.GetValue<string>());
        Assert.Equal("<|endoftext|>", config["pad_token"]!.GetValue<string>());
        var map = JsonNode.Parse(File.ReadAllText(dir.File("special_tokens_map.json")))!;
        Assert.Equal("<|endoftext|>", map["eos_token"]!.GetValue<string>());

        var again = TextTokenizer.Load(dir.Path);
        foreach (var text in new[] { "Question: What is 12 + 7?\n\nAnswer: 19", "héllo 😀<|im_end|>\n", "  the  end " })
            Assert.Equal(Tok.Encode(text), again.Encode(text));
        Assert.Equal((Tok.VocabSize, Tok.EosId, Tok.PadId, Tok.BosId), (again.VocabSize, again.EosId, again.PadId, again.BosId));
        Assert.True(again.PadIsEos);
    }
}
