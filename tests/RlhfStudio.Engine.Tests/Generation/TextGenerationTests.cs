using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Generation;

public class TextGenerationTests
{
    private static readonly TextTokenizer Tokenizer = TextTokenizer.BuiltIn();

    private static CausalLanguageModel Model()
    {
        var json = TestModels.LlamaJson();
        json["vocab_size"] = Tokenizer.VocabSize;
        json["eos_token_id"] = Tokenizer.EosId;
        json["pad_token_id"] = Tokenizer.PadId;
        return TestModels.Randomize(new CausalLanguageModel(ModelConfig.Parse(json, "test-config.json")), seed: 4);
    }

    private static readonly GenerationSettings Greedy = new() { Temperature = 0, MaxNewTokens = 12, EosTokenIds = [] };

    [Fact]
    public void Text_generation_decodes_what_the_token_generator_produced()
    {
        using var model = Model();
        string[] prompts = ["What is the sum of two and three?", "Hi"];
        var texts = TextGenerator.GenerateText(model, Tokenizer, prompts, Greedy);

        var encoded = prompts.Select(p => (IReadOnlyList<int>)Tokenizer.Encode(p)).ToList();
        var (ids, mask) = PromptBatch.LeftPad(encoded, Tokenizer.PadId!.Value);
        using (ids)
        using (mask)
        using (var result = TextGenerator.Generate(model, ids, mask, Greedy with { PadTokenId = Tokenizer.PadId }))
        {
            Assert.Equal(2, texts.Count);
            for (int r = 0; r < 2; r++)
            {
                Assert.Equal(12, result.Tokens[r].Count);
                Assert.Equal(Tokenizer.Decode(result.Tokens[r].Select(t => (int)t)), texts[r]);
            }
        }
    }

    [Fact]
    public void A_stop_string_ends_the_row_that_produced_it()
    {
        using var model = Model();
        var prompt = Tokenizer.Encode("Question: what is the sum");
        using var free = RunOne(model, prompt, Greedy);
        var text = Tokenizer.Decode(free.Tokens[0].Select(t => (int)t), skipSpecialTokens: false);
        // The text of the first four tokens must end generation by the fourth token at the latest.
        var stop = Tokenizer.Decode(free.Tokens[0].Take(4).Select(t => (int)t), skipSpecialTokens: false);
        Assert.False(string.IsNullOrEmpty(stop));
        using var stopped = RunOne(model, prompt, Greedy with { StopStrings = [stop] });
        Assert.Equal(FinishReason.StopString, stopped.FinishReasons[0]);
        Assert.True(stopped.Tokens[0].Count <= 4);
        Assert.Contains(stop, Tokenizer.Decode(stopped.Tokens[0].Select(t => (int)t), skipSpecialTokens: false));
        Assert.Equal(free.Tokens[0].Take(stopped.Tokens[0].Count), stopped.Tokens[0]);
        Assert.True(text.Length > stop.Length);
    }

    [Fact]
    public void Stop_strings_without_a_tokenizer_are_refused()
    {
        using var model = Model();
        using var ids = torch.tensor(new long[] { 5, 6 }).unsqueeze(0);
        var e = Assert.Throws<ArgumentException>(() => TextGenerator.Generate(model, ids, null, Greedy with { StopStrings = ["x"] }));
        Assert.Contains("tokenizer", e.Message);
    }

    [Fact]
    public void The_tokenizer_eos_ends_text_generation_when_settings_leave_eos_open()
    {
        using var model = Model();
        var settings = TextGenerator.WithTokenizerDefaults(model, Tokenizer, new GenerationSettings { Temperature = 0 });
        Assert.Equal([(long)Tokenizer.EosId!.Value], settings.EosTokenIds);
        Assert.Equal(Tokenizer.PadId, settings.PadTokenId);
    }

    private static GenerationResult RunOne(CausalLanguageModel model, IReadOnlyList<int> prompt, GenerationSettings settings)
    {
        var (ids, mask) = PromptBatch.LeftPad([prompt], Tokenizer.PadId!.Value);
        using (ids)
        using (mask)
            return TextGenerator.Generate(model, ids, mask, settings, tokenizer: Tokenizer);
    }
}
