// A dataset as a trainer uses it: DatasetRef (file, folder or built-in; split; evaluation split or
// held-out fraction; column map; row limit) -> the examples a training method sees, streamed.
//
//   var data = Dataset.Open(spec.Dataset, TrainingMethod.Sft, spec.Seed);   // checks format vs method
//   foreach (var example in data.Examples(DatasetPart.Train)) ...            // throws at the first bad row
//
// Evaluation rows: the evaluation split when one is named; for built-in sets, their "test" split (held-out
// questions that never occur in training); otherwise EvalFraction of the training split, held out by
// row position: exactly round(n * fraction) rows (at least 1 when the fraction is above 0 and there are
// 2+ rows), those whose seeded hash of the row index is smallest. The same rows are held out on every
// run with the same seed and file, and the two parts never share a row. This needs the row count, which
// for JSONL is one streaming pass over the file.
using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Data;

public enum DatasetPart { Train, Eval }

public sealed class Dataset
{
    private readonly RowSource _train;
    private readonly RowSource? _evalSplit;
    private readonly double _evalFraction;
    private readonly int? _maxRows;
    private readonly int _seed;
    private long[]? _heldOut;

    private Dataset(string name, TrainingMethod method, DatasetFormat format, ColumnMap map, RowSource train, RowSource? evalSplit,
        double evalFraction, int? maxRows, int seed, IReadOnlyList<string> splits)
    {
        Name = name;
        Method = method;
        Format = format;
        Map = map;
        _train = train;
        _evalSplit = evalSplit;
        _evalFraction = evalFraction;
        _maxRows = maxRows;
        _seed = seed;
        Splits = splits;
    }

    /// <summary>File or folder name, or "builtin:arithmetic-sft".</summary>
    public string Name { get; }
    public TrainingMethod Method { get; }
    public DatasetFormat Format { get; }
    public ColumnMap Map { get; }
    /// <summary>Columns of the training split as named in the files.</summary>
    public IReadOnlyList<string> Columns => _train.Columns;
    /// <summary>Split names available.</summary>
    public IReadOnlyList<string> Splits { get; }

    /// <summary>Where evaluation rows come from, in words.</summary>
    public string EvalDescription => _evalSplit is not null ? $"split \"{_evalSplit.Split}\""
        : _evalFraction > 0 ? $"{_evalFraction:P0} of \"{_train.Split}\" held out (seed {_seed})"
        : "none";

    /// <summary>Opens a dataset for a method: resolves files or the built-in set, applies the column map and
    /// checks that the method can train on the format. Throws <see cref="DatasetException"/> for anything
    /// the user must fix (missing file, unknown split, columns the method cannot use ...).</summary>
    public static Dataset Open(DatasetRef source, TrainingMethod method, int seed = 42)
    {
        var map = new ColumnMap(source.ColumnMap);
        string name;
        RowSource train;
        RowSource? eval = null;
        IReadOnlyList<string> splits;
        if (source.Builtin is { } builtin)
        {
            var set = BuiltinDatasets.Resolve(builtin, method);
            name = $"builtin:{set}";
            train = RowSource.Builtin(set, source.Split, seed);
            eval = RowSource.Builtin(set, source.EvalSplit ?? "test", seed);
            splits = BuiltinDatasets.Splits;
        }
        else if (source.Path is { } path)
        {
            var files = DatasetFiles.Find(path);
            name = DatasetFormats.DisplayName(path);
            train = RowSource.Files(source.Split, files.FilesOf(source.Split));
            if (source.EvalSplit is { } evalSplit) eval = RowSource.Files(evalSplit, files.FilesOf(evalSplit));
            splits = files.Splits;
        }
        else throw DatasetException.ForFile("dataset", "no dataset given: set a path or a built-in name");

        var format = DatasetFormats.Check(method, train.DisplayName, train.Columns, map);
        return new Dataset(name, method, format, map, train, eval, eval is null ? source.EvalFraction : 0, source.MaxRows, seed, splits);
    }

    /// <summary>Rows of a part as read (training rows without the held-out ones, at most MaxRows).
    /// Rows that could not be read come with <see cref="DatasetRow.Error"/> set.</summary>
    public IEnumerable<DatasetRow> Rows(DatasetPart part)
    {
        if (part == DatasetPart.Eval && _evalSplit is not null) return _evalSplit.Rows();
        if (part == DatasetPart.Eval && _evalFraction <= 0) return [];
        var heldOut = _evalFraction > 0 ? HeldOut() : [];
        var rows = Filter(_train.Rows(), heldOut, keep: part == DatasetPart.Eval);
        return part == DatasetPart.Train && _maxRows is int max ? rows.Take(max) : rows;
    }

    /// <summary>Examples in the dataset's own format (one per row); throws at the first bad row.</summary>
    public IEnumerable<Example> Records(DatasetPart part) =>
        Rows(part).Select(row => DatasetFormats.Convert(row, Format, Map));

    /// <summary>What <see cref="Method"/> trains on (see <see cref="DatasetFormats.ForMethod"/>); throws at the first bad row.</summary>
    public IEnumerable<Example> Examples(DatasetPart part) =>
        Records(part).SelectMany(e => DatasetFormats.ForMethod(e, Method, _seed));

    /// <summary>Rows in a part (JSONL: one streaming pass; Parquet and built-ins: metadata only).</summary>
    public long CountRows(DatasetPart part)
    {
        if (part == DatasetPart.Eval)
            return _evalSplit?.Count() ?? (_evalFraction > 0 ? HeldOut().LongLength : 0);
        long n = _train.Count() - (_evalFraction > 0 ? HeldOut().LongLength : 0);
        return _maxRows is int max ? Math.Min(n, max) : n;
    }

    private long[] HeldOut() => _heldOut ??= HeldOutRows.Select(_train.Count(), _evalFraction, _seed);

    private static IEnumerable<DatasetRow> Filter(IEnumerable<DatasetRow> rows, long[] heldOut, bool keep)
    {
        long index = 0;
        foreach (var row in rows)
        {
            if ((Array.BinarySearch(heldOut, index++) >= 0) == keep) yield return row;
        }
    }
}

/// <summary>Which row positions a held-out fraction takes (see the file comment).</summary>
public static class HeldOutRows
{
    /// <summary>Sorted positions in [0, <paramref name="rows"/>) of the held-out rows.</summary>
    public static long[] Select(long rows, double fraction, int seed)
    {
        if (fraction <= 0 || rows < 2) return [];
        long k = Math.Clamp((long)Math.Round(rows * fraction), 1, rows - 1);
        // Keep the k positions with the smallest hashes: a max-heap of size k.
        var heap = new PriorityQueue<long, ulong>(Comparer<ulong>.Create((a, b) => b.CompareTo(a)));
        ulong salt = StableHash.Mix((ulong)(uint)seed ^ 0x5EED_0F_4E1D);
        for (long i = 0; i < rows; i++)
        {
            ulong h = StableHash.Mix((ulong)i ^ salt);
            if (heap.Count < k) heap.Enqueue(i, h);
            else if (heap.TryPeek(out _, out var top) && h < top) heap.EnqueueDequeue(i, h);
        }
        var result = new long[heap.Count];
        int n = 0;
        while (heap.TryDequeue(out var i, out _)) result[n++] = i;
        Array.Sort(result);
        return result;
    }
}

/// <summary>The rows of one split: files read one after another, or a built-in generator.</summary>
internal sealed class RowSource
{
    private readonly Func<IEnumerable<DatasetRow>> _rows;
    private readonly Func<long> _count;
    private readonly Lazy<IReadOnlyList<string>> _columns;
    private long? _counted;

    private RowSource(string split, string displayName, Func<IEnumerable<DatasetRow>> rows, Func<long> count, Func<IReadOnlyList<string>> columns)
    {
        Split = split;
        DisplayName = displayName;
        _rows = rows;
        _count = count;
        _columns = new Lazy<IReadOnlyList<string>>(columns);
    }

    public string Split { get; }
    /// <summary>The path messages name: the first file of the split, or the built-in set.</summary>
    public string DisplayName { get; }
    public IReadOnlyList<string> Columns => _columns.Value;
    public IEnumerable<DatasetRow> Rows() => _rows();
    public long Count() => _counted ??= _count();

    public static RowSource Files(string split, IReadOnlyList<string> files) => new(split, files[0],
        () => files.SelectMany(ReadFile),
        () => files.Sum(CountFile),
        () => ColumnsOf(files[0]));

    public static RowSource Builtin(string set, string split, int seed) => new(split, $"builtin:{set}",
        () => BuiltinDatasets.Rows(set, split, seed),
        () => BuiltinDatasets.Count(set, split),
        () => BuiltinDatasets.Columns(set));

    private static bool IsParquet(string file) => file.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase);

    private static IEnumerable<DatasetRow> ReadFile(string file) => IsParquet(file) ? ParquetFile.Read(file) : JsonlFile.Read(file);

    private static long CountFile(string file) => IsParquet(file) ? ParquetFile.CountRows(file) : JsonlFile.CountRows(file);

    private static IReadOnlyList<string> ColumnsOf(string file)
    {
        if (!IsParquet(file)) return JsonlFile.Columns(file);
        if (ParquetFile.CountRows(file) == 0) throw DatasetException.ForFile(file, "the file has no rows");
        return ParquetFile.Columns(file);
    }
}
