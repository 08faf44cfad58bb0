// A temporary folder for dataset tests, with writers for JSONL and Parquet (Parquet.Net's serializer,
// column names from [JsonPropertyName]).
using System.Text.Json;
using System.Text.Json.Serialization;
using Parquet;
using Parquet.Serialization;

namespace RlhfStudio.Engine.Tests.Data;

public sealed class DataFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("rlhf-data-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Text(string name, string text)
    {
        var path = File(name);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllText(path, text);
        return path;
    }

    /// <summary>One line per object, serialised with System.Text.Json (anonymous objects keep their member names).</summary>
    public string Jsonl(string name, params object[] rows) =>
        Text(name, string.Join("\n", rows.Select(r => r as string ?? JsonSerializer.Serialize(r))) + "\n");

    public string Parquet<T>(string name, IEnumerable<T> rows, int rowGroupSize = 1000)
    {
        var path = File(name);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        ParquetSerializer.SerializeAsync(rows, path, new ParquetOptions { RowGroupSize = rowGroupSize }).GetAwaiter().GetResult();
        return path;
    }

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

// Row classes for Parquet files.
public sealed class PromptCompletionRow
{
    [JsonPropertyName("prompt")] public string? Prompt { get; set; }
    [JsonPropertyName("completion")] public string? Completion { get; set; }
}

public sealed class MessageRow
{
    [JsonPropertyName("role")] public string? Role { get; set; }
    [JsonPropertyName("content")] public string? Content { get; set; }
}

public sealed class ConversationRow
{
    [JsonPropertyName("messages")] public List<MessageRow>? Messages { get; set; }
    [JsonPropertyName("id")] public long Id { get; set; }
}

public sealed class MixedRow
{
    [JsonPropertyName("text")] public string? Text { get; set; }
    [JsonPropertyName("n")] public int N { get; set; }
    [JsonPropertyName("x")] public double X { get; set; }
    [JsonPropertyName("flag")] public bool Flag { get; set; }
    [JsonPropertyName("tags")] public List<string>? Tags { get; set; }
}

public sealed class PairedRow
{
    [JsonPropertyName("question")] public string? Question { get; set; }
    [JsonPropertyName("response_j")] public string? ResponseJ { get; set; }
    [JsonPropertyName("response_k")] public string? ResponseK { get; set; }
}

public sealed class TextRow
{
    [JsonPropertyName("text")] public string? Text { get; set; }
}
