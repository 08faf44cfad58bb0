using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Tests.Data;

public class ExampleTemplatesTests
{
    private static readonly TextTokenizer Tokenizer = TextTokenizer.BuiltIn();

    private static string Marked(TokenizedExample t) => Tokenizer.Decode(t.InputIds.Where((_, i) => t.CompletionMask[i]));

    [Fact]
    public void Plain_content_goes_through_the_template_like_strings()
    {
        var viaContent = PromptTemplates.StackLlama.Tokenize(Tokenizer, Content.Plain("What is 2 + 2?"), Content.Plain("4"));
        var viaStrings = PromptTemplates.StackLlama.Tokenize(Tokenizer, "What is 2 + 2?", "4");
        Assert.Equal(viaStrings.InputIds, viaContent.InputIds);
        Assert.Equal(viaStrings.CompletionMask, viaContent.CompletionMask);
        Assert.Equal(("Question: What is 2 + 2?\n\nAnswer: ", "4"), PromptTemplates.StackLlama.Format(Content.Plain("What is 2 + 2?"), Content.Plain("4")));
    }

    [Fact]
    public void Raw_content_skips_the_template_and_marks_only_the_completion()
    {
        var t = PromptTemplates.StackLlama.Tokenize(Tokenizer, Content.Raw("H: hi\nA:"), Content.Raw(" hello"));
        Assert.Equal("H: hi\nA: hello", Tokenizer.Decode(t.InputIds));
        Assert.Equal(Tokenizer.EosId, t.InputIds[^1]);
        Assert.Equal(" hello", Marked(t));
        Assert.Equal(("H: hi\nA:", " hello"), PromptTemplates.ChatMl.Format(Content.Raw("H: hi\nA:"), Content.Raw(" hello")));
    }

    [Fact]
    public void Assistant_turns_inside_a_message_prompt_are_not_trained_on()
    {
        var prompt = Content.Of([ChatMessage.User("a"), ChatMessage.Assistant("first"), ChatMessage.User("b")]);
        var t = PromptTemplates.ChatMl.Tokenize(Tokenizer, prompt, Content.Plain("second"));
        // Only the last reply (and the EOS after it) is marked; "first" is context.
        Assert.Equal("second<|im_end|>\n<|endoftext|>", Tokenizer.Decode(t.InputIds.Where((_, i) => t.CompletionMask[i]), skipSpecialTokens: false));
        var (p, c) = PromptTemplates.ChatMl.Format(prompt, Content.Plain("second"));
        Assert.EndsWith("<|im_start|>assistant\n", p);
        Assert.Equal("second<|im_end|>\n", c);
    }

    [Fact]
    public void Text_examples_train_on_every_token_and_end_with_eos()
    {
        var t = ExampleTemplates.TokenizeText(Tokenizer, "just text");
        Assert.All(t.CompletionMask, Assert.True);
        Assert.Equal(Tokenizer.EosId, t.InputIds[^1]);
        Assert.Equal("just text", Tokenizer.Decode(t.InputIds));
    }
}
