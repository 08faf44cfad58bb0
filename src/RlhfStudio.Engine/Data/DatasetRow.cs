// Rows as the readers produce them, and the problems they report. Every problem names the file, the
// line (JSONL, 1-based, as editors count) or the row (Parquet, 0-based, as pandas and datasets index
// it) and the column, e.g. `data.jsonl line 37: field "chosen" missing`.
using System.Collections;
using System.Globalization;

namespace RlhfStudio.Engine.Data;

/// <summary>Where a row comes from: a line of a JSONL file (1-based), a row of a Parquet file (0-based)
/// or a row of a built-in generated set (0-based).</summary>
public readonly record struct RowLocation(string File, long Number, bool IsLine)
{
    public static RowLocation Line(string file, long line) => new(file, line, true);
    public static RowLocation Row(string file, long row) => new(file, row, false);

    /// <summary>File name without folders (messages stay short; the folder is shown once elsewhere).</summary>
    public string FileName => Path.GetFileName(File) is { Length: > 0 } name ? name : File;

    public override string ToString() => $"{FileName} {(IsLine ? "line" : "row")} {Number}";
}

/// <summary>One problem with a dataset. <see cref="Location"/> is null for problems with the whole file
/// (missing, empty, wrong type); <see cref="Column"/> is the column (as named in the file) when one is at fault.</summary>
public sealed record DatasetIssue(string File, RowLocation? Location, string? Column, string Message)
{
    public static DatasetIssue ForFile(string file, string message) => new(file, null, null, message);
    public static DatasetIssue At(RowLocation location, string? column, string message) => new(location.File, location, column, message);

    /// <summary>The message as shown to users: "data.jsonl line 37: field "chosen" missing".</summary>
    public string Text => Location is RowLocation l ? $"{l}: {Message}" : $"{DisplayName(File)}: {Message}";

    public override string ToString() => Text;

    private static string DisplayName(string file) => Path.GetFileName(file.TrimEnd('/', '\\')) is { Length: > 0 } n ? n : file;
}

/// <summary>Bad input the user can fix. The message names the file, line or row, and column.</summary>
public sealed class DatasetException(DatasetIssue issue) : Exception(issue.Text)
{
    public DatasetIssue Issue { get; } = issue;

    public static DatasetException ForFile(string file, string message) => new(DatasetIssue.ForFile(file, message));
}

/// <summary>One row. Values are normalised to: null, string, long, double, bool, byte[],
/// <see cref="IReadOnlyList{T}"/> of values, or <see cref="IReadOnlyDictionary{TKey,TValue}"/> (string keys)
/// of values. A row that could not be read carries <see cref="Error"/> and no values, so that a
/// validation scan can report it and go on while training stops at it.</summary>
public sealed class DatasetRow
{
    private static readonly IReadOnlyDictionary<string, object?> NoValues = new Dictionary<string, object?>();

    public DatasetRow(RowLocation location, IReadOnlyDictionary<string, object?> values)
    {
        Location = location;
        Values = values;
    }

    private DatasetRow(RowLocation location, DatasetIssue error)
    {
        Location = location;
        Values = NoValues;
        Error = error;
    }

    public static DatasetRow Failed(RowLocation location, string message) => new(location, DatasetIssue.At(location, null, message));

    public RowLocation Location { get; }
    public IReadOnlyDictionary<string, object?> Values { get; }
    public DatasetIssue? Error { get; }

    /// <summary>Throws the row's read error, if it has one (training mode).</summary>
    public DatasetRow EnsureReadable() => Error is null ? this : throw new DatasetException(Error);
}

/// <summary>Conversions of reader values (JSON, Parquet) to the normalised row values.</summary>
internal static class RowValues
{
    public static object? Normalize(object? value) => value switch
    {
        null => null,
        string s => s,
        ReadOnlyMemory<char> m => m.ToString(),
        bool b => b,
        long l => l,
        int i => (long)i,
        short s => (long)s,
        sbyte s => (long)s,
        byte b => (long)b,
        ushort u => (long)u,
        uint u => (long)u,
        ulong u => u <= long.MaxValue ? (object)(long)u : (double)u,
        double d => d,
        float f => (double)f,
        decimal m => (double)m,
        Half h => (double)h,
        byte[] bytes => bytes,
        ReadOnlyMemory<byte> bytes => bytes.ToArray(),
        DateTime t => t.ToString("O", CultureInfo.InvariantCulture),
        DateTimeOffset t => t.ToString("O", CultureInfo.InvariantCulture),
        DateOnly d => d.ToString("O", CultureInfo.InvariantCulture),
        TimeSpan t => t.ToString("c", CultureInfo.InvariantCulture),
        IDictionary dict => NormalizeDictionary(dict),
        IEnumerable list => list.Cast<object?>().Select(Normalize).ToList(),
        _ => value.ToString(),
    };

    private static Dictionary<string, object?> NormalizeDictionary(IDictionary dict)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in dict) result[e.Key.ToString() ?? ""] = Normalize(e.Value);
        return result;
    }

    /// <summary>A short name of a value's type for messages ("a number", "a list").</summary>
    public static string Describe(object? value) => value switch
    {
        null => "null",
        string => "a string",
        bool => "a boolean",
        long or double => "a number",
        byte[] => "bytes",
        IReadOnlyDictionary<string, object?> => "an object",
        IReadOnlyList<object?> => "a list",
        _ => value.GetType().Name,
    };
}
