using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;
using static RlhfStudio.Engine.Tests.Text.TokenizerFixtures;

namespace RlhfStudio.Engine.Tests.Text;

public class PromptTemplateTests
{
    private static readonly TextTokenizer BuiltIn = TextTokenizer.BuiltIn();

    [Fact]
    public void Names_match_the_run_spec_names()
    {
        Assert.Equal(PromptTemplateNames.All, PromptTemplates.All.Select(t => t.Name));
        foreach (var name in PromptTemplateNames.All) Assert.Equal(name, PromptTemplates.Get(name).Name);
        var ex = Assert.Throws<ArgumentException>(() => PromptTemplates.Get("alpaca"));
        Assert.Contains("alpaca", ex.Message);
    }

    [Fact]
    public void StackLlama_formats_exactly()
    {
        var t = PromptTemplates.StackLlama;
        Assert.Equal("Question: What is 12 + 7?\n\nAnswer: ", t.FormatPrompt("What is 12 + 7?"));
        Assert.Equal("Question: What is 12 + 7?\n\nAnswer: 19", t.FormatFull("What is 12 + 7?", "19"));
        Assert.Equal("Question: a\n\nAnswer: b\n\nQuestion: c\n\nAnswer: ", t.FormatConversation(
            [ChatMessage.User("a"), ChatMessage.Assistant("b"), ChatMessage.User("c")], addGenerationPrompt: true));
    }

    [Fact]
    public void ChatMl_formats_exactly_with_and_without_system()
    {
        var t = PromptTemplates.ChatMl;
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", t.FormatPrompt("Hi"));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n", t.FormatFull("Hi", "Hello"));
        Assert.Equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n",
            t.FormatFull("Hi", "Hello", system: "Be brief."));
    }

    [Fact]
    public void Llama2_formats_exactly_with_and_without_system()
    {
        var t = PromptTemplates.Llama2;
        Assert.Equal("<s>[INST] Hi [/INST]", t.FormatPrompt("Hi"));
        Assert.Equal("<s>[INST] Hi [/INST] Hello </s>", t.FormatFull("Hi", "Hello"));
        Assert.Equal("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s>", t.FormatFull("Hi", "Hello", system: "Be brief."));
        Assert.Equal("<s>[INST] a [/INST] b </s><s>[INST] c [/INST]", t.FormatConversation(
            [ChatMessage.User("a"), ChatMessage.Assistant("b"), ChatMessage.User("c")]));
    }

    [Fact]
    public void Completion_mask_covers_answer_and_eos_even_when_pad_is_eos()
    {
        Assert.True(BuiltIn.PadIsEos);
        var ex = PromptTemplates.StackLlama.Tokenize(BuiltIn, "What is 12 + 7?", "19");
        int eos = BuiltIn.EosId!.Value;
        Assert.Equal(eos, ex.InputIds[^1]);
        Assert.True(ex.CompletionMask[^1]);
        Assert.Equal(ex.InputIds.Count, ex.CompletionMask.Count);
        var completion = ex.InputIds.Where((_, i) => ex.CompletionMask[i]).ToList();
        Assert.Equal("19<|endoftext|>", BuiltIn.Decode(completion, skipSpecialTokens: false));
        // The prompt part is exactly what generation is given.
        Assert.Equal(PromptTemplates.StackLlama.TokenizePrompt(BuiltIn, "What is 12 + 7?"), ex.InputIds.Take(ex.PromptLength));
        Assert.All(ex.CompletionMask.Skip(ex.PromptLength), Assert.True);
    }

    [Fact]
    public void ChatMl_does_not_repeat_eos_when_eos_is_im_end()
    {
        using var dir = new TempFolder();
        dir.Write("tokenizer.json", Gpt2Json());
        dir.Write("tokenizer_config.json", """{"eos_token": "<|im_end|>"}""");
        var tok = TextTokenizer.Load(dir.Path);
        var ex = PromptTemplates.ChatMl.Tokenize(tok, "hi", "yo");
        Assert.Equal(2, ex.InputIds.Count(id => id == 263)); // the user turn's <|im_end|> and the answer's: no extra EOS
        Assert.Equal("yo<|im_end|>\n", tok.Decode(ex.InputIds.Where((_, i) => ex.CompletionMask[i]), skipSpecialTokens: false));

        var builtIn = PromptTemplates.ChatMl.Tokenize(BuiltIn, "hi", "yo");
        Assert.Equal(BuiltIn.EosId, builtIn.InputIds[^1]);
        Assert.True(builtIn.CompletionMask[^1]);
    }

    [Fact]
    public void Llama2_uses_bos_and_eos_ids_not_text()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("tokenizer.model"), SentencePieceModel());
        var tok = TextTokenizer.Load(dir.Path);
        var ex = PromptTemplates.Llama2.Tokenize(tok, "the", "a cat");
        Assert.Equal(tok.BosId, ex.InputIds[0]);
        Assert.False(ex.CompletionMask[0]);
        Assert.Equal(tok.EosId, ex.InputIds[^1]);
        Assert.True(ex.CompletionMask[^1]);
        Assert.Equal("[INST] the [/INST] a cat", tok.Decode(ex.InputIds));
        Assert.Equal("a cat", tok.Decode(ex.InputIds.Where((_, i) => ex.CompletionMask[i])));
    }

    [Fact]
    public void Conversation_masks_every_assistant_turn_only()
    {
        var messages = new[] { ChatMessage.System("S"), ChatMessage.User("q1"), ChatMessage.Assistant("a1"), ChatMessage.User("q2"), ChatMessage.Assistant("a2") };
        var ex = PromptTemplates.ChatMl.TokenizeConversation(BuiltIn, messages);
        Assert.Equal(PromptTemplates.ChatMl.FormatConversation(messages) + "<|endoftext|>", BuiltIn.Decode(ex.InputIds, skipSpecialTokens: false));
        var trained = BuiltIn.Decode(ex.InputIds.Where((_, i) => ex.CompletionMask[i]), skipSpecialTokens: false);
        Assert.Equal("a1<|im_end|>\na2<|im_end|>\n<|endoftext|>", trained);
        Assert.Throws<ArgumentException>(() => PromptTemplates.ChatMl.TokenizeConversation(BuiltIn, [new ChatMessage("tool", "x")]));
    }
}
