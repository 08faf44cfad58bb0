// Dataset formats (TRL's standard formats plus the Alpaca and StackExchange layouts), detected from
// the column names after column mapping, and what each training method accepts.
//
//   format                columns (expected names)                 example produced
//   Preference            chosen, rejected [, prompt] [, margin]   PreferenceExample
//   StackExchangePaired   question, response_j, response_k         PreferenceExample (response_j is better)
//   StackExchangeScored   question, answers                        ScoredQuestionExample
//   Conversational        messages                                 ConversationExample
//   PromptCompletion      prompt, completion                       PromptCompletionExample
//   Alpaca                instruction, output [, input]            PromptCompletionExample
//   Text                  text                                     TextExample
//   PromptOnly            prompt                                   PromptExample
//
// The first row of the table whose columns are all present wins (a file with prompt, chosen and
// rejected is a preference set, not a prompt-only one).
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Data;

public enum DatasetFormat
{
    Text,
    PromptCompletion,
    Conversational,
    Preference,
    PromptOnly,
    Alpaca,
    StackExchangePaired,
    StackExchangeScored,
}

public static class DatasetFormats
{
    private static readonly (DatasetFormat Format, string[] Columns)[] Detection =
    [
        (DatasetFormat.Preference, ["chosen", "rejected"]),
        (DatasetFormat.StackExchangePaired, ["question", "response_j", "response_k"]),
        (DatasetFormat.StackExchangeScored, ["question", "answers"]),
        (DatasetFormat.Conversational, ["messages"]),
        (DatasetFormat.PromptCompletion, ["prompt", "completion"]),
        (DatasetFormat.Alpaca, ["instruction", "output"]),
        (DatasetFormat.Text, ["text"]),
        (DatasetFormat.PromptOnly, ["prompt"]),
    ];

    /// <summary>The format of a dataset with these columns (expected names, i.e. after column mapping), or null.</summary>
    public static DatasetFormat? Detect(IEnumerable<string> columns)
    {
        var set = columns.ToHashSet(StringComparer.Ordinal);
        foreach (var (format, required) in Detection)
            if (required.All(set.Contains)) return format;
        return null;
    }

    /// <summary>Whether <paramref name="method"/> can train on data of <paramref name="format"/>.
    /// SFT takes anything with a completion (preferences: prompt + chosen; StackExchange: the best answer);
    /// reward modelling and DPO take pairs; PPO and RLOO take the prompt of anything but plain text.</summary>
    public static bool Accepts(TrainingMethod method, DatasetFormat format) => method switch
    {
        TrainingMethod.Sft => format != DatasetFormat.PromptOnly,
        TrainingMethod.Reward or TrainingMethod.Dpo => format is DatasetFormat.Preference or DatasetFormat.StackExchangePaired or DatasetFormat.StackExchangeScored,
        _ => format != DatasetFormat.Text,
    };

    /// <summary>What <paramref name="method"/> needs, in words: "SFT needs `text`, `prompt`+`completion`, ...".</summary>
    public static string Requirement(TrainingMethod method) => method switch
    {
        TrainingMethod.Sft => "SFT needs `text`, `prompt`+`completion`, `messages` or `instruction`+`output` (or preference data: `chosen`+`rejected`, `question`+`response_j`+`response_k`, `question`+`answers`)",
        TrainingMethod.Reward or TrainingMethod.Dpo => $"{MethodName(method)} needs preference pairs: `chosen`+`rejected` (with or without `prompt`), `question`+`response_j`+`response_k` or `question`+`answers` (StackExchange)",
        _ => $"{MethodName(method)} needs prompts: `prompt`, `messages`, `instruction`+`output`, `chosen`+`rejected` or a StackExchange `question`",
    };

    public static string MethodName(TrainingMethod method) => method switch
    {
        TrainingMethod.Sft => "SFT",
        TrainingMethod.Reward => "reward modelling",
        TrainingMethod.Dpo => "DPO",
        TrainingMethod.Ppo => "PPO",
        _ => "RLOO",
    };

    /// <summary>The format of a dataset for <paramref name="method"/>, or a <see cref="DatasetException"/> naming
    /// the dataset, its columns and what the method needs.</summary>
    public static DatasetFormat Check(TrainingMethod method, string dataset, IReadOnlyList<string> fileColumns, ColumnMap map)
    {
        map.Validate(dataset, fileColumns);
        var format = Detect(map.Expected(fileColumns));
        if (format is DatasetFormat f && Accepts(method, f)) return f;
        var found = format is null ? "" : $" (it looks like {Describe(format.Value)} data)";
        throw DatasetException.ForFile(dataset,
            $"dataset {DisplayName(dataset)} has columns [{string.Join(", ", fileColumns)}]{found}; {Requirement(method)}");
    }

    public static string Describe(DatasetFormat format) => format switch
    {
        DatasetFormat.Text => "language-modelling `text`",
        DatasetFormat.PromptCompletion => "prompt-completion",
        DatasetFormat.Conversational => "conversational `messages`",
        DatasetFormat.Preference => "preference",
        DatasetFormat.PromptOnly => "prompt-only",
        DatasetFormat.Alpaca => "Alpaca instruction",
        DatasetFormat.StackExchangePaired => "StackExchange paired",
        _ => "StackExchange scored-answers",
    };

    internal static string DisplayName(string path) => Path.GetFileName(path.TrimEnd('/', '\\')) is { Length: > 0 } n ? n : path;

    /// <summary>The example in one row of a dataset of <paramref name="format"/>; throws <see cref="DatasetException"/>
    /// naming the row and the column when the row does not fit.</summary>
    public static Example Convert(DatasetRow row, DatasetFormat format, ColumnMap map)
    {
        row.EnsureReadable();
        var r = new FieldReader(row, map);
        Example example = format switch
        {
            DatasetFormat.Text => new TextExample(r.String("text")),
            DatasetFormat.PromptCompletion => PromptCompletion(r, r.Content("prompt"), "completion"),
            DatasetFormat.Conversational => new ConversationExample(r.Messages("messages")),
            DatasetFormat.Preference => Preference(r),
            DatasetFormat.PromptOnly => new PromptExample(r.Content("prompt")),
            DatasetFormat.Alpaca => Alpaca(r),
            DatasetFormat.StackExchangePaired => PreferenceExample.Of(r.String("question"), r.String("response_j"), r.String("response_k")),
            _ => new ScoredQuestionExample(r.String("question"), r.Answers("answers")),
        };
        return example with { Source = row.Location };
    }

    /// <summary>What <paramref name="method"/> trains on from one example (a StackExchange question gives up to
    /// ten pairs). Throws <see cref="DatasetException"/> when the example cannot serve the method.</summary>
    public static IEnumerable<Example> ForMethod(Example example, TrainingMethod method, int seed)
    {
        var source = example.Source;
        IEnumerable<Example> result = method switch
        {
            TrainingMethod.Sft => [ForSft(example)],
            TrainingMethod.Reward or TrainingMethod.Dpo => ForPreference(example, seed),
            _ => [new PromptExample(PromptOf(example))],
        };
        return result.Select(e => e with { Source = source });
    }

    private static Example ForSft(Example example) => example switch
    {
        TextExample or PromptCompletionExample or ConversationExample => example,
        PreferenceExample { Prompt.Kind: ContentKind.Raw } p => new TextExample(p.Prompt.Text + p.Chosen),
        PreferenceExample p => new PromptCompletionExample(p.Prompt, p.Chosen),
        ScoredQuestionExample q when q.Answers.Count > 0 =>
            PromptCompletionExample.Of(q.Question, q.Answers.MaxBy(a => a.Score)!.Text),
        _ => throw Unusable(example, "has no completion to train on"),
    };

    private static IEnumerable<Example> ForPreference(Example example, int seed) => example switch
    {
        PreferenceExample p => [p],
        ScoredQuestionExample q => StackExchangePairs.Build(q, seed),
        _ => throw Unusable(example, "is not a preference pair"),
    };

    /// <summary>The prompt of an example (for RL): a conversation's messages before its last assistant turn.</summary>
    public static Content PromptOf(Example example) => example switch
    {
        PromptExample p => p.Prompt,
        PromptCompletionExample p => p.Prompt,
        PreferenceExample p => p.Prompt,
        ScoredQuestionExample q => Content.Plain(q.Question),
        ConversationExample c when c.Messages.Count > 0 && c.Messages[^1].Role == "assistant" => Content.Of(c.Messages.Take(c.Messages.Count - 1).ToList()),
        ConversationExample c => Content.Of(c.Messages),
        _ => throw Unusable(example, "has no prompt"),
    };

    private static DatasetException Unusable(Example example, string problem) =>
        example.Source is RowLocation l
            ? new DatasetException(DatasetIssue.At(l, null, $"the example {problem}"))
            : new DatasetException(DatasetIssue.ForFile("dataset", $"an example {problem}"));

    private static PromptCompletionExample PromptCompletion(FieldReader r, Content prompt, string completionColumn)
    {
        var completion = r.Content(completionColumn);
        if (prompt.IsConversational || completion.IsConversational)
            return new PromptCompletionExample(Content.Of(prompt.AsMessages("user")), Content.Of(completion.AsMessages("assistant")));
        return new PromptCompletionExample(prompt, completion);
    }

    private static PromptCompletionExample Alpaca(FieldReader r)
    {
        var instruction = r.String("instruction");
        var input = r.OptionalString("input");
        var prompt = string.IsNullOrWhiteSpace(input) ? instruction : instruction + "\n\n" + input;
        return new PromptCompletionExample(Content.Plain(prompt), Content.Plain(r.String("output")));
    }

    private static PreferenceExample Preference(FieldReader r)
    {
        var chosen = r.Content("chosen");
        var rejected = r.Content("rejected");
        var margin = r.OptionalNumber("margin");
        if (r.Has("prompt"))
        {
            var prompt = r.Content("prompt");
            if (prompt.IsConversational || chosen.IsConversational || rejected.IsConversational)
                return new PreferenceExample(Content.Of(prompt.AsMessages("user")), Content.Of(chosen.AsMessages("assistant")),
                    Content.Of(rejected.AsMessages("assistant")), margin);
            return new PreferenceExample(prompt, chosen, rejected, margin);
        }
        return ImplicitPrompt.Split(r, chosen, rejected, margin);
    }
}

/// <summary>Preference pairs without a prompt column (TRL's "implicit prompt"): the shared beginning of
/// chosen and rejected is the prompt.
/// <list type="bullet">
/// <item>Conversational: the messages of "chosen" before its last assistant turn; "rejected" must begin
/// with the same messages.</item>
/// <item>Text: the longest common prefix, cut back to a word boundary so no word is split, and (as TRL
/// does) a space ending the prefix moves to the responses, which then begin with it. The prompt is raw
/// text (e.g. "\n\nHuman: hi\n\nAssistant:") and is not wrapped in a prompt template.</item>
/// </list></summary>
internal static class ImplicitPrompt
{
    public static PreferenceExample Split(FieldReader r, Content chosen, Content rejected, double? margin)
    {
        if (chosen.IsConversational != rejected.IsConversational)
            throw r.Error("rejected", "is " + (rejected.IsConversational ? "a message list" : "text") + " but \"chosen\" is not; both must be text or both messages");
        if (chosen.IsConversational)
        {
            var c = chosen.Messages!;
            var rj = rejected.Messages!;
            int last = -1;
            for (int i = c.Count - 1; i >= 0 && last < 0; i--)
                if (c[i].Role == "assistant") last = i;
            if (last < 0) throw r.Error("chosen", "has no assistant message, so the prompt cannot be told from the response");
            if (rj.Count <= last || !c.Take(last).SequenceEqual(rj.Take(last)))
                throw r.Error("rejected", "does not begin with the same messages as \"chosen\" (its prompt); add a \"prompt\" column");
            return new PreferenceExample(Content.Of(c.Take(last).ToList()), Content.Of(c.Skip(last).ToList()), Content.Of(rj.Skip(last).ToList()), margin);
        }
        var (a, b) = (chosen.Text!, rejected.Text!);
        int n = SharedPrefix(a, b);
        if (n == 0) throw r.Error("chosen", "and \"rejected\" share no beginning to use as the prompt; add a \"prompt\" column");
        if (n == a.Length || n == b.Length) throw r.Error(n == a.Length ? "chosen" : "rejected", "is empty once the prompt shared with the other response is removed");
        return new PreferenceExample(Content.Raw(a[..n]), Content.Raw(a[n..]), Content.Raw(b[n..]), margin);
    }

    /// <summary>Length of the prompt: the common prefix, cut at a word boundary, without a final space.</summary>
    public static int SharedPrefix(string a, string b)
    {
        int n = 0;
        while (n < a.Length && n < b.Length && a[n] == b[n]) n++;
        // Inside a word ("cats" / "cars")? back up to where the word starts.
        bool midWord = n < a.Length && n < b.Length && n > 0 && char.IsLetterOrDigit(a[n - 1])
            && (char.IsLetterOrDigit(a[n]) || char.IsLetterOrDigit(b[n]));
        if (midWord)
            while (n > 0 && char.IsLetterOrDigit(a[n - 1])) n--;
        if (n > 0 && a[n - 1] == ' ') n--;
        return n;
    }
}
