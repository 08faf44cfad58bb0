// Parquet files, read one row group at a time (Parquet.Net's untyped deserialiser assembles nested
// lists and structs, e.g. messages: list<struct<role, content>>, into lists and dictionaries). Row
// counts and column names come from the footer, so counting never reads data. Parquet.Net is async;
// its calls run on the thread pool and are waited for, so that callers with a synchronisation context
// (a Blazor circuit) cannot deadlock.
using Parquet;
using Parquet.Schema;
using Parquet.Serialization;

namespace RlhfStudio.Engine.Data;

internal static class ParquetFile
{
    /// <summary>Rows in file order; <see cref="RowLocation"/> numbers them from 0 across row groups.
    /// A null value appears as a null (never as a missing key).</summary>
    public static IEnumerable<DatasetRow> Read(string path)
    {
        using var stream = OpenStream(path);
        var (columns, groups) = Footer(path, stream);
        long row = 0;
        for (int g = 0; g < groups.Count; g++)
        {
            IList<Dictionary<string, object>> data;
            try
            {
                data = Wait(() => ParquetSerializer.DeserializeUntypedAsync(stream, null, g)).Data;
            }
            catch (Exception e) when (e is not DatasetException)
            {
                throw new DatasetException(DatasetIssue.At(RowLocation.Row(path, row), null,
                    $"cannot read row group {g} ({e.GetBaseException().Message})"));
            }
            foreach (var values in data)
            {
                var normalized = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var c in columns)
                    normalized[c] = values.TryGetValue(c, out var v) ? RowValues.Normalize(v) : null;
                yield return new DatasetRow(RowLocation.Row(path, row++), normalized);
            }
        }
    }

    public static long CountRows(string path)
    {
        using var stream = OpenStream(path);
        return Footer(path, stream).Groups.Sum();
    }

    public static IReadOnlyList<string> Columns(string path)
    {
        using var stream = OpenStream(path);
        return Footer(path, stream).Columns;
    }

    private static FileStream OpenStream(string path) => new(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);

    private static (IReadOnlyList<string> Columns, IReadOnlyList<long> Groups) Footer(string path, Stream stream)
    {
        try
        {
            return Wait(async () =>
            {
                await using var reader = await ParquetReader.CreateAsync(stream, leaveStreamOpen: true).ConfigureAwait(false);
                IReadOnlyList<string> columns = reader.Schema.Fields.Select(f => f.Name).ToList();
                IReadOnlyList<long> groups = reader.RowGroups.Select(g => g.RowCount).ToList();
                return (columns, groups);
            });
        }
        catch (Exception e) when (e is not DatasetException)
        {
            throw DatasetException.ForFile(path, $"not a readable Parquet file ({e.GetBaseException().Message})");
        }
    }

    private static T Wait<T>(Func<Task<T>> work) => Task.Run(work).GetAwaiter().GetResult();
}
