// JSON lines: one JSON object per line, read line by line through a UTF-8 stream reader so a file of any
// size is never held in memory. Blank lines are skipped but still counted, so line numbers match an editor.
// Hugging Face's Dataset.to_json writes JSON lines with a ".json" extension, hence both extensions.
using System.Text;
using System.Text.Json;

namespace RlhfStudio.Engine.Data;

internal static class JsonlFile
{
    private const int BufferSize = 1 << 16;

    /// <summary>Rows in file order. A line that is not a JSON object yields a row with an error.</summary>
    public static IEnumerable<DatasetRow> Read(string path)
    {
        using var reader = OpenText(path);
        long line = 0;
        while (reader.ReadLine() is { } text)
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            yield return Parse(path, line, text);
        }
    }

    /// <summary>Number of non-blank lines, counted by streaming bytes (no JSON parsing).</summary>
    public static long CountRows(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, BufferSize, FileOptions.SequentialScan);
        var buffer = new byte[BufferSize];
        long rows = 0;
        bool content = false;
        int read;
        while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            foreach (var b in buffer.AsSpan(0, read))
            {
                if (b == (byte)'\n')
                {
                    if (content) rows++;
                    content = false;
                }
                else if (!content && b is not ((byte)' ' or (byte)'\t' or (byte)'\r' or 0xEF or 0xBB or 0xBF))
                    content = true; // (the three bytes of a UTF-8 BOM do not make a line count)
            }
        }
        return content ? rows + 1 : rows;
    }

    /// <summary>Column names: the keys of the first row.</summary>
    public static IReadOnlyList<string> Columns(string path)
    {
        foreach (var row in Read(path))
            return row.EnsureReadable().Values.Keys.ToList();
        throw DatasetException.ForFile(path, "the file is empty (no JSON lines)");
    }

    private static StreamReader OpenText(string path) =>
        new(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, BufferSize, FileOptions.SequentialScan),
            new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false), detectEncodingFromByteOrderMarks: true, BufferSize);

    private static DatasetRow Parse(string path, long line, string text)
    {
        var location = RowLocation.Line(path, line);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = false, MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            var hint = line == 1 && text.TrimStart().StartsWith('[') ? "; a file holding one JSON array is not JSON lines: write one object per line" : "";
            return DatasetRow.Failed(location, $"not valid JSON ({ShortJsonError(e)}){hint}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                var hint = root.ValueKind == JsonValueKind.Array || text.TrimStart().StartsWith('[')
                    ? "; a file holding one JSON array is not JSON lines: write one object per line" : "";
                return DatasetRow.Failed(location, $"expected a JSON object, got {Kind(root.ValueKind)}{hint}");
            }
            return new DatasetRow(location, (IReadOnlyDictionary<string, object?>)Convert(root)!);
        }
    }

    private static object? Convert(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out var l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Array => e.EnumerateArray().Select(Convert).ToList(),
        JsonValueKind.Object => e.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal),
            (d, p) => { d[p.Name] = Convert(p.Value); return d; }),
        _ => null,
    };

    private static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };

    // System.Text.Json says "... LineNumber: 0 | BytePositionInLine: 12."; within one line only the position matters.
    private static string ShortJsonError(JsonException e)
    {
        var message = e.Message;
        int cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (cut >= 0) message = message[..cut].TrimEnd();
        message = message.TrimEnd('.');
        return e.BytePositionInLine is long p ? $"{message}, at byte {p + 1}" : message;
    }
}
