// How examples become model text and token ids through a prompt template:
//
//   Plain prompt + completion    template.Tokenize(prompt, completion): "Question: {p}\n\nAnswer: {c}" + EOS
//   Messages (either side)       the template's conversation format; plain text on the other side becomes
//                                a user (prompt) or assistant (completion) message; only the completion is marked
//   Raw prompt + completion      no template: prompt + completion + EOS (text that is already formatted)
//   TextExample                  no template: text + EOS, every token marked
//
// Marked tokens (TokenizedExample.CompletionMask) are the ones a completion-only loss trains on.
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Data;

public static class ExampleTemplates
{
    /// <summary>The text a model is given to continue (the prompt, formatted).</summary>
    public static string FormatPrompt(this PromptTemplate template, Content prompt) => prompt.Kind switch
    {
        ContentKind.Plain => template.FormatPrompt(prompt.Text!),
        ContentKind.Raw => prompt.Text!,
        _ => template.FormatConversation(prompt.Messages!, addGenerationPrompt: true),
    };

    /// <summary>Prompt and completion as the model sees them: the formatted prompt, and the rest of the full text.</summary>
    public static (string Prompt, string Completion) Format(this PromptTemplate template, Content prompt, Content completion)
    {
        if (prompt.Kind == ContentKind.Raw || completion.Kind == ContentKind.Raw)
            return (prompt.ToString(), completion.ToString());
        string promptText = template.FormatPrompt(prompt);
        string full = prompt.Kind == ContentKind.Plain && completion.Kind == ContentKind.Plain
            ? template.FormatFull(prompt.Text!, completion.Text!)
            : template.FormatConversation([.. prompt.AsMessages("user"), .. completion.AsMessages("assistant")]);
        return full.StartsWith(promptText, StringComparison.Ordinal) ? (promptText, full[promptText.Length..]) : (promptText, full);
    }

    /// <summary>Ids of prompt + completion + EOS with the completion (and EOS) marked.</summary>
    public static TokenizedExample Tokenize(this PromptTemplate template, TextTokenizer tokenizer, Content prompt, Content completion)
    {
        if (prompt.Kind == ContentKind.Raw || completion.Kind == ContentKind.Raw)
            return TokenizeRaw(tokenizer, prompt.ToString(), completion.ToString());
        if (prompt.Kind == ContentKind.Plain && completion.Kind == ContentKind.Plain)
            return template.Tokenize(tokenizer, prompt.Text!, completion.Text!);
        var promptMessages = prompt.AsMessages("user");
        var full = template.TokenizeConversation(tokenizer, [.. promptMessages, .. completion.AsMessages("assistant")]);
        // Assistant turns inside the prompt are context, not completion: unmark everything before the completion.
        var promptIds = template.TokenizeConversationPrompt(tokenizer, promptMessages);
        int shared = 0;
        while (shared < promptIds.Count && shared < full.InputIds.Count && promptIds[shared] == full.InputIds[shared]) shared++;
        var mask = full.CompletionMask.Select((m, i) => m && i >= shared).ToList();
        return new TokenizedExample(full.InputIds, mask);
    }

    /// <summary>Ids of the prompt, ready for generation.</summary>
    public static IReadOnlyList<int> TokenizePrompt(this PromptTemplate template, TextTokenizer tokenizer, Content prompt) => prompt.Kind switch
    {
        ContentKind.Plain => template.TokenizePrompt(tokenizer, prompt.Text!),
        ContentKind.Raw => tokenizer.Encode(prompt.Text!, addBos: tokenizer.AddBosByDefault),
        _ => template.TokenizeConversationPrompt(tokenizer, prompt.Messages!),
    };

    /// <summary>Ids of a language-modelling text: text + EOS, all marked.</summary>
    public static TokenizedExample TokenizeText(TextTokenizer tokenizer, string text)
    {
        var ids = tokenizer.Encode(text, addBos: tokenizer.AddBosByDefault).ToList();
        if (tokenizer.EosId is int eos) ids.Add(eos);
        return new TokenizedExample(ids, ids.Select(_ => true).ToList());
    }

    private static TokenizedExample TokenizeRaw(TextTokenizer tokenizer, string prompt, string completion)
    {
        var ids = tokenizer.Encode(prompt + completion, addBos: tokenizer.AddBosByDefault).ToList();
        var promptIds = tokenizer.Encode(prompt, addBos: tokenizer.AddBosByDefault);
        int shared = 0;
        while (shared < promptIds.Count && shared < ids.Count && promptIds[shared] == ids[shared]) shared++;
        var mask = ids.Select((_, i) => i >= shared).ToList();
        if (tokenizer.EosId is int eos) { ids.Add(eos); mask.Add(true); }
        return new TokenizedExample(ids, mask);
    }
}
