// Prompt templates: how a (prompt, completion) pair or a conversation becomes text and token ids, and
// which tokens training learns from. Names match PromptTemplateNames (RunSpec.cs).
//
//   stackllama  Question: {q}\n\nAnswer: {a}
//   chatml      <|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n
//   llama2      <s>[INST] {q} [/INST] {a} </s>     (system: [INST] <<SYS>>\n{s}\n<</SYS>>\n\n{q} [/INST])
//
// A template yields segments (text that is prompt or completion, and BOS/EOS markers). Tokenizing encodes
// each stretch of text in one piece, as inference would, and finds segment boundaries by encoding the
// text up to each boundary: where a token straddles one (e.g. "Answer: " + "19" -> "Answer:", " 19"), it
// belongs to the completion. BOS/EOS are token ids, never text, so "<s>" in user text stays text.
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Text;

/// <summary>One message of a conversation; Role is "system", "user" or "assistant".</summary>
public sealed record ChatMessage(string Role, string Content)
{
    public static ChatMessage System(string content) => new("system", content);
    public static ChatMessage User(string content) => new("user", content);
    public static ChatMessage Assistant(string content) => new("assistant", content);
}

/// <summary>Token ids of an example and which of them are completion (trained on).</summary>
/// <param name="CompletionMask">True where the token is completion, including the EOS that ends it; false for
/// prompt tokens. Build labels from this mask, never from <c>id == PadId</c> (pad may equal EOS).</param>
public sealed record TokenizedExample(IReadOnlyList<int> InputIds, IReadOnlyList<bool> CompletionMask)
{
    /// <summary>Number of leading prompt tokens (index of the first completion token).</summary>
    public int PromptLength
    {
        get
        {
            for (int i = 0; i < CompletionMask.Count; i++)
                if (CompletionMask[i]) return i;
            return CompletionMask.Count;
        }
    }
}

public abstract class PromptTemplate
{
    /// <summary>A piece of a formatted example: text, or a BOS/EOS marker shown as <paramref name="Text"/>
    /// in formatted text but tokenized as the tokenizer's id.</summary>
    protected enum SegmentKind { Text, Bos, Eos }

    /// <param name="BosAlways">For BOS markers: add BOS even when the tokenizer does not add it by default.</param>
    protected readonly record struct Segment(SegmentKind Kind, string Text, bool Completion, bool BosAlways = false)
    {
        public static Segment Prompt(string text) => new(SegmentKind.Text, text, false);
        public static Segment Answer(string text) => new(SegmentKind.Text, text, true);
    }

    /// <summary>One of <see cref="PromptTemplateNames"/>.</summary>
    public abstract string Name { get; }

    /// <summary>The segments of a conversation. With <paramref name="addGenerationPrompt"/>, ends with what
    /// precedes the assistant's reply so that a model continues from there.</summary>
    protected abstract IEnumerable<Segment> Segments(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt);

    /// <summary>The text a model is given to answer <paramref name="prompt"/>.</summary>
    public string FormatPrompt(string prompt, string? system = null) =>
        FormatConversation(Messages(prompt, null, system), addGenerationPrompt: true);

    /// <summary>The text of prompt and completion together.</summary>
    public string FormatFull(string prompt, string completion, string? system = null) =>
        FormatConversation(Messages(prompt, completion, system));

    public string FormatConversation(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = false) =>
        string.Concat(Segments(Validate(messages), addGenerationPrompt).Select(s => s.Text));

    /// <summary>Ids of the prompt, ready for generation (BOS as the tokenizer expects).</summary>
    public IReadOnlyList<int> TokenizePrompt(TextTokenizer tokenizer, string prompt, string? system = null) =>
        Tokenize(tokenizer, Segments(Messages(prompt, null, system), addGenerationPrompt: true)).InputIds;

    /// <summary>Ids of prompt + completion + EOS, with the completion (and its EOS) marked.</summary>
    public TokenizedExample Tokenize(TextTokenizer tokenizer, string prompt, string completion, string? system = null) =>
        Tokenize(tokenizer, Segments(Messages(prompt, completion, system), addGenerationPrompt: false));

    /// <summary>Ids of a conversation; every assistant message (and the EOS after the last one) is marked.</summary>
    public TokenizedExample TokenizeConversation(TextTokenizer tokenizer, IReadOnlyList<ChatMessage> messages) =>
        Tokenize(tokenizer, Segments(Validate(messages), addGenerationPrompt: false));

    /// <summary>Ids of a conversation followed by the generation prompt (for sampling the next reply).</summary>
    public IReadOnlyList<int> TokenizeConversationPrompt(TextTokenizer tokenizer, IReadOnlyList<ChatMessage> messages) =>
        Tokenize(tokenizer, Segments(Validate(messages), addGenerationPrompt: true)).InputIds;

    private static List<ChatMessage> Messages(string prompt, string? completion, string? system)
    {
        var list = new List<ChatMessage>();
        if (!string.IsNullOrEmpty(system)) list.Add(ChatMessage.System(system));
        list.Add(ChatMessage.User(prompt));
        if (completion is not null) list.Add(ChatMessage.Assistant(completion));
        return list;
    }

    private static IReadOnlyList<ChatMessage> Validate(IReadOnlyList<ChatMessage> messages)
    {
        foreach (var m in messages)
            if (m.Role is not ("system" or "user" or "assistant"))
                throw new ArgumentException($"message role \"{m.Role}\" is not one of system, user, assistant", nameof(messages));
        return messages;
    }

    private static TokenizedExample Tokenize(TextTokenizer tokenizer, IEnumerable<Segment> segments)
    {
        var ids = new List<int>();
        var mask = new List<bool>();
        var run = new List<Segment>();
        foreach (var s in segments)
        {
            switch (s.Kind)
            {
                case SegmentKind.Text:
                    if (s.Text.Length > 0) run.Add(s);
                    break;
                case SegmentKind.Bos:
                    Flush();
                    if (tokenizer.BosId is int bos && (s.BosAlways || tokenizer.AddBosByDefault)) { ids.Add(bos); mask.Add(false); }
                    break;
                case SegmentKind.Eos:
                    Flush();
                    // ChatML with eos = <|im_end|>: the text already ends with EOS (maybe plus "\n").
                    if (tokenizer.EosId is int eos && !EndsWithEos(tokenizer, ids, eos)) { ids.Add(eos); mask.Add(s.Completion); }
                    break;
            }
        }
        Flush();
        return new TokenizedExample(ids, mask);

        void Flush()
        {
            if (run.Count == 0) return;
            var text = string.Concat(run.Select(s => s.Text));
            var runIds = tokenizer.Encode(text);
            int start = 0, prefixLength = 0;
            for (int i = 0; i < run.Count; i++)
            {
                prefixLength += run[i].Text.Length;
                int end = i == run.Count - 1 ? runIds.Count
                    : Math.Max(start, CommonPrefix(tokenizer.Encode(text[..prefixLength]), runIds));
                for (int t = start; t < end; t++) { ids.Add(runIds[t]); mask.Add(run[i].Completion); }
                start = end;
            }
            run.Clear();
        }
    }

    private static int CommonPrefix(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        int n = 0;
        while (n < a.Count && n < b.Count && a[n] == b[n]) n++;
        return n;
    }

    private static bool EndsWithEos(TextTokenizer tokenizer, List<int> ids, int eos)
    {
        for (int i = ids.Count - 1; i >= 0; i--)
        {
            if (ids[i] == eos) return true;
            if (tokenizer.IsSpecial(ids[i]) || !string.IsNullOrWhiteSpace(tokenizer.Decode([ids[i]]))) return false;
        }
        return false;
    }

    public override string ToString() => Name;
}

/// <summary>StackLLaMA's format (TRL's stack_llama example): "Question: {q}\n\nAnswer: {a}".</summary>
internal sealed class StackLlamaTemplate : PromptTemplate
{
    public override string Name => PromptTemplateNames.StackLlama;

    protected override IEnumerable<Segment> Segments(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        yield return new Segment(SegmentKind.Bos, "", false);
        bool first = true;
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            var separator = first ? "" : "\n\n";
            first = false;
            switch (m.Role)
            {
                case "system":
                    yield return Segment.Prompt(separator + m.Content);
                    break;
                case "user":
                    yield return Segment.Prompt(separator + "Question: " + m.Content + "\n\nAnswer: ");
                    break;
                default:
                    // An answer directly follows "Answer: "; one without a question before it stands alone.
                    if (i > 0 && messages[i - 1].Role == "user") separator = "";
                    yield return Segment.Answer(separator + m.Content);
                    if (i == messages.Count - 1) yield return new Segment(SegmentKind.Eos, "", true);
                    break;
            }
        }
    }
}

/// <summary>ChatML (Qwen, SmolLM-Instruct, ...): &lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n per message.</summary>
internal sealed class ChatMlTemplate : PromptTemplate
{
    public override string Name => PromptTemplateNames.ChatMl;

    protected override IEnumerable<Segment> Segments(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        yield return new Segment(SegmentKind.Bos, "", false);
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            if (m.Role == "assistant")
            {
                yield return Segment.Prompt("<|im_start|>assistant\n");
                yield return Segment.Answer(m.Content + "<|im_end|>\n");
                if (i == messages.Count - 1) yield return new Segment(SegmentKind.Eos, "", true);
            }
            else
                yield return Segment.Prompt($"<|im_start|>{m.Role}\n{m.Content}<|im_end|>\n");
        }
        if (addGenerationPrompt && (messages.Count == 0 || messages[^1].Role != "assistant"))
            yield return Segment.Prompt("<|im_start|>assistant\n");
    }
}

/// <summary>Llama 2 chat, as its HF chat template: each exchange is &lt;s&gt;[INST] q [/INST] a &lt;/s&gt;,
/// the system prompt sits in a &lt;&lt;SYS&gt;&gt; block inside the first [INST]; contents are trimmed.</summary>
internal sealed class Llama2Template : PromptTemplate
{
    public override string Name => PromptTemplateNames.Llama2;

    protected override IEnumerable<Segment> Segments(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        string? system = null;
        bool sawUser = false;
        foreach (var m in messages)
        {
            switch (m.Role)
            {
                case "system":
                    system = m.Content.Trim();
                    break;
                case "user":
                    var content = m.Content.Trim();
                    if (system is not null && !sawUser) content = $"<<SYS>>\n{system}\n<</SYS>>\n\n{content}";
                    sawUser = true;
                    yield return new Segment(SegmentKind.Bos, "<s>", false, BosAlways: true);
                    yield return Segment.Prompt($"[INST] {content} [/INST]");
                    break;
                default:
                    yield return Segment.Answer(" " + m.Content.Trim());
                    yield return new Segment(SegmentKind.Eos, " </s>", true);
                    break;
            }
        }
    }
}

public static class PromptTemplates
{
    public static PromptTemplate StackLlama { get; } = new StackLlamaTemplate();
    public static PromptTemplate ChatMl { get; } = new ChatMlTemplate();
    public static PromptTemplate Llama2 { get; } = new Llama2Template();
    public static IReadOnlyList<PromptTemplate> All { get; } = [StackLlama, ChatMl, Llama2];

    /// <summary>The template named <paramref name="name"/> (one of <see cref="PromptTemplateNames"/>).</summary>
    public static PromptTemplate Get(string name) =>
        All.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException($"unknown prompt template \"{name}\": use one of {string.Join(", ", PromptTemplateNames.All)}", nameof(name));

    /// <summary>The template a Jinja chat template corresponds to: ChatML when it uses &lt;|im_start|&gt;,
    /// Llama 2 when it uses [INST]; null otherwise.</summary>
    public static PromptTemplate? FromChatTemplate(string? chatTemplate) =>
        chatTemplate is null ? null
        : chatTemplate.Contains("<|im_start|>", StringComparison.Ordinal) ? ChatMl
        : chatTemplate.Contains("[INST]", StringComparison.Ordinal) ? Llama2
        : null;

    /// <summary>The default for a model: what its tokenizer's chat template corresponds to, else StackLLaMA
    /// (base models have no chat format; <paramref name="modelType"/> is kept for callers' logs and
    /// future per-architecture defaults, and does not change the choice today).</summary>
    public static PromptTemplate DefaultFor(TextTokenizer tokenizer, string? modelType = null) =>
        FromChatTemplate(tokenizer.ChatTemplate) ?? StackLlama;
}
