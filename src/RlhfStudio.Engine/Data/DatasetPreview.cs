// What the web UI shows before a run starts: the first rows as the trainer will see them (template
// applied, tokens counted), the detected format, columns, row count, and the first problems a
// validation scan finds. Unlike training, the scan does not stop at the first bad row, and the
// preview never throws for bad input: a dataset that cannot be opened comes back with Problem set.
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Data;

/// <summary>One text as the model sees it. Labels: "text", "example", "chosen", "rejected", "prompt".
/// Token counts are null when no tokenizer was given.</summary>
public sealed record PreviewText(string Label, string Prompt, string Completion, int? PromptTokens, int? CompletionTokens);

/// <summary>One training example in the preview, with the row it came from.</summary>
public sealed record PreviewRow(string Source, string Kind, IReadOnlyList<PreviewText> Texts);

public sealed record PreviewOptions
{
    /// <summary>Examples to show.</summary>
    public int Rows { get; init; } = 5;
    /// <summary>Problems to report before the scan stops collecting.</summary>
    public int MaxErrors { get; init; } = 20;
    /// <summary>Rows the validation scan reads at most (a scan of a huge file stops here).</summary>
    public long ScanRows { get; init; } = 100_000;
    /// <summary>Template to format with; null = StackLLaMA's.</summary>
    public PromptTemplate? Template { get; init; }
    /// <summary>Tokenizer for token counts; null = no counts.</summary>
    public TextTokenizer? Tokenizer { get; init; }
    public int Seed { get; init; } = 42;
}

/// <param name="Dataset">File or folder name, or builtin:name.</param>
/// <param name="Problem">Why the dataset cannot be used for the method (then the other fields are mostly empty).</param>
/// <param name="TotalRows">Training rows (after held-out rows), when counting was possible.</param>
/// <param name="EvalRows">Evaluation rows.</param>
/// <param name="RowsScanned">Rows the validation scan read; <paramref name="ScanComplete"/> when that was all of them.</param>
public sealed record DatasetPreview(
    string Dataset,
    TrainingMethod Method,
    DatasetFormat? Format,
    IReadOnlyList<string> Columns,
    IReadOnlyList<string> Splits,
    long? TotalRows,
    long? EvalRows,
    string? EvalSource,
    IReadOnlyList<PreviewRow> Rows,
    IReadOnlyList<DatasetIssue> Errors,
    long RowsScanned,
    bool ScanComplete,
    string? Problem)
{
    public static DatasetPreview Create(DatasetRef source, TrainingMethod method, PreviewOptions? options = null)
    {
        options ??= new PreviewOptions();
        Dataset data;
        try
        {
            data = Data.Dataset.Open(source, method, options.Seed);
        }
        catch (DatasetException e)
        {
            return new DatasetPreview(source.ToString(), method, null, [], [], null, null, null, [], [e.Issue], 0, false, e.Message);
        }
        var template = options.Template ?? PromptTemplates.StackLlama;
        var errors = new List<DatasetIssue>();
        var rows = new List<PreviewRow>();
        long scanned = 0;
        bool complete = true;
        foreach (var part in new[] { DatasetPart.Train, DatasetPart.Eval })
        {
            try
            {
                foreach (var row in data.Rows(part))
                {
                    if (scanned >= options.ScanRows || errors.Count >= options.MaxErrors) { complete = false; break; }
                    scanned++;
                    try
                    {
                        var examples = DatasetFormats.ForMethod(DatasetFormats.Convert(row, data.Format, data.Map), method, options.Seed).ToList();
                        if (part == DatasetPart.Train)
                            foreach (var e in examples.TakeWhile(_ => rows.Count < options.Rows))
                                rows.Add(Render(e, template, options.Tokenizer));
                    }
                    catch (DatasetException e) { errors.Add(e.Issue); }
                }
            }
            catch (DatasetException e)
            {
                // A file that cannot be read at all (corrupt Parquet, missing shard): report and move on.
                errors.Add(e.Issue);
                complete = false;
            }
        }
        long? total = TryCount(data, DatasetPart.Train, errors), eval = TryCount(data, DatasetPart.Eval, errors);
        return new DatasetPreview(data.Name, method, data.Format, data.Columns, data.Splits, total, eval, data.EvalDescription,
            rows, errors, scanned, complete, null);
    }

    private static long? TryCount(Dataset data, DatasetPart part, List<DatasetIssue> errors)
    {
        try { return data.CountRows(part); }
        catch (DatasetException e) { errors.Add(e.Issue); return null; }
    }

    /// <summary>An example as the trainer sees it: formatted with <paramref name="template"/>, tokens counted
    /// with <paramref name="tokenizer"/> when one is given.</summary>
    public static PreviewRow Render(Example example, PromptTemplate template, TextTokenizer? tokenizer)
    {
        var source = example.Source?.ToString() ?? "";
        return example switch
        {
            TextExample t => new PreviewRow(source, "text", [Text("text", "", t.Text, tokenizer is null ? null : ExampleTemplates.TokenizeText(tokenizer, t.Text))]),
            PromptCompletionExample p => new PreviewRow(source, "prompt-completion", [Pair("example", p.Prompt, p.Completion)]),
            ConversationExample c => new PreviewRow(source, "conversation", [Conversation(c)]),
            PreferenceExample p => new PreviewRow(source, "preference", [Pair("chosen", p.Prompt, p.Chosen), Pair("rejected", p.Prompt, p.Rejected)]),
            PromptExample p => new PreviewRow(source, "prompt", [new PreviewText("prompt", template.FormatPrompt(p.Prompt), "",
                tokenizer is null ? null : template.TokenizePrompt(tokenizer, p.Prompt).Count, null)]),
            ScoredQuestionExample q => new PreviewRow(source, "scored-question",
                q.Answers.Select(a => Pair($"score {a.Score}", Content.Plain(q.Question), Content.Plain(a.Text))).ToList()),
            _ => new PreviewRow(source, example.GetType().Name, []),
        };

        PreviewText Pair(string label, Content prompt, Content completion)
        {
            var (p, c) = template.Format(prompt, completion);
            return Text(label, p, c, tokenizer is null ? null : template.Tokenize(tokenizer, prompt, completion));
        }

        PreviewText Conversation(ConversationExample c)
        {
            var text = template.FormatConversation(c.Messages);
            return Text("conversation", "", text, tokenizer is null ? null : template.TokenizeConversation(tokenizer, c.Messages));
        }
    }

    private static PreviewText Text(string label, string prompt, string completion, TokenizedExample? tokens)
    {
        if (tokens is null) return new PreviewText(label, prompt, completion, null, null);
        int completionTokens = tokens.CompletionMask.Count(m => m);
        return new PreviewText(label, prompt, completion, tokens.InputIds.Count - completionTokens, completionTokens);
    }
}
