// Column mapping (DatasetRef.ColumnMap: expected name -> name in the file) and typed access to a row's
// fields through it, with errors that name the row and the file's column.
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Data;

/// <summary>Renames file columns to the names formats expect, e.g. "chosen" -> "response_j".</summary>
public sealed class ColumnMap
{
    public static readonly ColumnMap None = new(null);

    private readonly IReadOnlyDictionary<string, string> _map;

    public ColumnMap(IReadOnlyDictionary<string, string>? map) =>
        _map = map ?? new Dictionary<string, string>();

    /// <summary>The file column read for <paramref name="expected"/>.</summary>
    public string FileColumn(string expected) => _map.TryGetValue(expected, out var file) ? file : expected;

    /// <summary>The column names as formats see them: mapped columns under their expected names, others as they are.</summary>
    public IReadOnlyList<string> Expected(IReadOnlyList<string> fileColumns)
    {
        var names = fileColumns.ToList();
        foreach (var (expected, file) in _map)
            if (fileColumns.Contains(file) && !names.Contains(expected)) names.Add(expected);
        return names;
    }

    /// <summary>How messages name a column: "\"response_j\" (as \"chosen\")" when mapped.</summary>
    public string Describe(string expected) =>
        _map.TryGetValue(expected, out var file) && file != expected ? $"\"{file}\" (as \"{expected}\")" : $"\"{expected}\"";

    /// <summary>Throws when the map names a column the dataset does not have.</summary>
    public void Validate(string dataset, IReadOnlyList<string> fileColumns)
    {
        foreach (var (expected, file) in _map)
            if (!fileColumns.Contains(file))
                throw DatasetException.ForFile(dataset,
                    $"column map \"{expected}\" -> \"{file}\": dataset {DatasetFormats.DisplayName(dataset)} has no column \"{file}\" (it has [{string.Join(", ", fileColumns)}])");
    }
}

/// <summary>Reads a row's fields by expected name; every failure names the row and the file column.</summary>
internal sealed class FieldReader(DatasetRow row, ColumnMap map)
{
    private static readonly string[] AnswerTextKeys = ["text", "body", "answer", "content"];
    private static readonly string[] PreferenceScoreKeys = ["pm_score"];
    private static readonly string[] VoteKeys = ["upvotes", "score", "votes"];
    private static readonly string[] AcceptedKeys = ["selected", "accepted", "is_accepted"];

    public bool Has(string expected) => row.Values.ContainsKey(map.FileColumn(expected));

    public DatasetException Error(string expected, string problem) =>
        new(DatasetIssue.At(row.Location, map.FileColumn(expected), $"{map.Describe(expected)} {problem}"));

    /// <summary>`field "chosen" missing`, `field "prompt" must be a string, not a number`.</summary>
    public DatasetException FieldError(string expected, string problem) =>
        new(DatasetIssue.At(row.Location, map.FileColumn(expected), $"field {map.Describe(expected)} {problem}"));

    private object Required(string expected)
    {
        if (!row.Values.TryGetValue(map.FileColumn(expected), out var value)) throw FieldError(expected, "missing");
        return value ?? throw Error(expected, "is null");
    }

    public string String(string expected) => Required(expected) switch
    {
        string s => s,
        var other => throw FieldError(expected, $"must be a string, not {RowValues.Describe(other)}"),
    };

    /// <summary>A string, or null when the column is absent or null.</summary>
    public string? OptionalString(string expected) =>
        row.Values.TryGetValue(map.FileColumn(expected), out var v) && v is not null
            ? v as string ?? throw FieldError(expected, $"must be a string, not {RowValues.Describe(v)}")
            : null;

    public double? OptionalNumber(string expected) =>
        row.Values.TryGetValue(map.FileColumn(expected), out var v) ? v switch
        {
            null => null,
            long l => l,
            double d => d,
            _ => throw FieldError(expected, $"must be a number, not {RowValues.Describe(v)}"),
        } : null;

    /// <summary>Text, or chat messages when the value is a list.</summary>
    public Content Content(string expected) => Required(expected) switch
    {
        string s => Data.Content.Plain(s),
        IReadOnlyList<object?> list => Data.Content.Of(ParseMessages(expected, list)),
        var other => throw FieldError(expected, $"must be a string or a list of {{role, content}}, not {RowValues.Describe(other)}"),
    };

    public IReadOnlyList<ChatMessage> Messages(string expected) => Required(expected) switch
    {
        IReadOnlyList<object?> list => ParseMessages(expected, list),
        var other => throw FieldError(expected, $"must be a list of {{role, content}}, not {RowValues.Describe(other)}"),
    };

    private List<ChatMessage> ParseMessages(string expected, IReadOnlyList<object?> list)
    {
        if (list.Count == 0) throw FieldError(expected, "must be a list of {role, content}, not an empty list");
        var messages = new List<ChatMessage>(list.Count);
        for (int i = 0; i < list.Count; i++)
        {
            string Problem(string what) => $"must be a list of {{role, content}} (item {i + 1} {what})";
            if (list[i] is not IReadOnlyDictionary<string, object?> item) throw FieldError(expected, Problem($"is {RowValues.Describe(list[i])}"));
            if (item.GetValueOrDefault("role") is not string role) throw FieldError(expected, Problem("has no \"role\" string"));
            if (item.GetValueOrDefault("content") is not string content) throw FieldError(expected, Problem("has no \"content\" string"));
            if (role is not ("system" or "user" or "assistant"))
                throw FieldError(expected, $"item {i + 1} has role \"{role}\": roles are system, user and assistant");
            messages.Add(new ChatMessage(role, content));
        }
        return messages;
    }

    /// <summary>StackExchange answers: a list of objects with the answer text ("text", "body", "answer" or "content")
    /// and either a preference score "pm_score" (used as it is) or net upvotes ("upvotes", "score" or "votes")
    /// plus an accepted flag ("selected", "accepted" or "is_accepted"; absent = not accepted), turned into a
    /// score by <see cref="StackExchangePairs.Score"/>.</summary>
    public IReadOnlyList<ScoredAnswer> Answers(string expected)
    {
        if (Required(expected) is not IReadOnlyList<object?> list)
            throw FieldError(expected, "must be a list of answers {text, pm_score or upvotes, selected}");
        var answers = new List<ScoredAnswer>(list.Count);
        for (int i = 0; i < list.Count; i++)
        {
            string Problem(string what) => $"item {i + 1} {what}";
            if (list[i] is not IReadOnlyDictionary<string, object?> item) throw FieldError(expected, Problem($"is {RowValues.Describe(list[i])}, not an answer object"));
            var text = First(item, AnswerTextKeys) as string ?? throw FieldError(expected, Problem("has no \"text\" string"));
            int score;
            if (First(item, PreferenceScoreKeys) is { } pm)
                score = pm is long or double ? (int)Math.Round(System.Convert.ToDouble(pm)) : throw FieldError(expected, Problem("has a \"pm_score\" that is not a number"));
            else if (First(item, VoteKeys) is { } votes)
            {
                if (votes is not (long or double)) throw FieldError(expected, Problem("has upvotes that are not a number"));
                var accepted = First(item, AcceptedKeys) switch
                {
                    null => false,
                    bool b => b,
                    long l => l != 0,
                    string s when bool.TryParse(s, out var b) => b,
                    _ => throw FieldError(expected, Problem("has an accepted flag that is not true or false")),
                };
                score = StackExchangePairs.Score((long)System.Convert.ToDouble(votes), accepted);
            }
            else throw FieldError(expected, Problem("has no \"pm_score\" or \"upvotes\""));
            answers.Add(new ScoredAnswer(text, score));
        }
        return answers;
    }

    private static object? First(IReadOnlyDictionary<string, object?> item, string[] keys)
    {
        foreach (var k in keys)
            if (item.TryGetValue(k, out var v) && v is not null) return v;
        return null;
    }
}
