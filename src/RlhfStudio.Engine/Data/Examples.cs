// Typed examples, one record per kind of training data (TRL's dataset types). Prompts and completions
// are Content: plain text, pre-formatted raw text, or a list of chat messages (TRL's "conversational"
// form). How each becomes model input through a PromptTemplate is in ExampleTemplates.cs.
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Data;

/// <summary>What a prompt, completion or response holds.</summary>
public enum ContentKind
{
    /// <summary>Plain text: a question (as a prompt) or an answer (as a completion); the prompt template wraps it.</summary>
    Plain,
    /// <summary>Already formatted text, used as it is (e.g. the shared prefix of two full transcripts).</summary>
    Raw,
    /// <summary>Chat messages; the prompt template formats them.</summary>
    Messages,
}

/// <summary>Text or chat messages.</summary>
public sealed record Content
{
    private Content(ContentKind kind, string? text, IReadOnlyList<ChatMessage>? messages)
    {
        Kind = kind;
        Text = text;
        Messages = messages;
    }

    public ContentKind Kind { get; }
    /// <summary>The text, for <see cref="ContentKind.Plain"/> and <see cref="ContentKind.Raw"/>.</summary>
    public string? Text { get; }
    /// <summary>The messages, for <see cref="ContentKind.Messages"/>.</summary>
    public IReadOnlyList<ChatMessage>? Messages { get; }

    public bool IsConversational => Kind == ContentKind.Messages;

    public static Content Plain(string text) => new(ContentKind.Plain, text, null);
    public static Content Raw(string text) => new(ContentKind.Raw, text, null);
    public static Content Of(IReadOnlyList<ChatMessage> messages) => new(ContentKind.Messages, null, messages);

    /// <summary>As messages: plain text becomes one message with <paramref name="role"/>.</summary>
    public IReadOnlyList<ChatMessage> AsMessages(string role) =>
        Messages ?? [new ChatMessage(role, Text ?? "")];

    /// <summary>Text for display and logs (messages as "role: content" lines).</summary>
    public override string ToString() =>
        Messages is null ? Text ?? "" : string.Join("\n", Messages.Select(m => $"{m.Role}: {m.Content}"));

    public bool Equals(Content? other) =>
        other is not null && Kind == other.Kind && Text == other.Text
        && (Messages is null ? other.Messages is null : other.Messages is not null && Messages.SequenceEqual(other.Messages));

    public override int GetHashCode() => HashCode.Combine(Kind, Text, Messages?.Count);
}

/// <summary>One training example. <see cref="Source"/> says which row it came from.</summary>
public abstract record Example
{
    public RowLocation? Source { get; init; }
}

/// <summary>Language modelling on raw text (TRL "text"): every token is trained on.</summary>
public sealed record TextExample(string Text) : Example;

/// <summary>A prompt and its completion (TRL prompt-completion; also Alpaca and preference "chosen" for SFT).</summary>
public sealed record PromptCompletionExample(Content Prompt, Content Completion) : Example
{
    public static PromptCompletionExample Of(string prompt, string completion) => new(Content.Plain(prompt), Content.Plain(completion));
}

/// <summary>A conversation (TRL conversational language modelling, "messages"): every assistant turn is trained on.</summary>
public sealed record ConversationExample(IReadOnlyList<ChatMessage> Messages) : Example;

/// <summary>A prompt with a preferred and a dispreferred response. <see cref="Margin"/> is how much better
/// the chosen one is (a "margin" column, or the score difference of StackExchange answers).</summary>
public sealed record PreferenceExample(Content Prompt, Content Chosen, Content Rejected, double? Margin = null) : Example
{
    public static PreferenceExample Of(string prompt, string chosen, string rejected, double? margin = null) =>
        new(Content.Plain(prompt), Content.Plain(chosen), Content.Plain(rejected), margin);
}

/// <summary>A prompt alone (TRL prompt-only), for on-policy RL.</summary>
public sealed record PromptExample(Content Prompt) : Example
{
    public static PromptExample Of(string prompt) => new(Content.Plain(prompt));
}

/// <summary>A StackExchange answer with its preference score (see <see cref="StackExchangePairs.Score"/>).</summary>
public sealed record ScoredAnswer(string Text, int Score);

/// <summary>A question with several scored answers (the StackExchange layout), from which
/// <see cref="StackExchangePairs"/> builds preference pairs.</summary>
public sealed record ScoredQuestionExample(string Question, IReadOnlyList<ScoredAnswer> Answers) : Example;
