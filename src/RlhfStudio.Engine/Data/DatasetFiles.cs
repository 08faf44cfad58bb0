// Which files make up each split of a dataset on disk. A path is a single .jsonl/.json/.parquet file
// (one split, "train") or a folder laid out as Hugging Face `datasets` exports and the Hub stores them:
//
//   train-00000-of-00003.parquet ...      shards: the split is the name before "-NNNNN-of-NNNNN"
//   data/train-00000-of-00001-<hash>.parquet, data/train_prefs-00000-of-00001.parquet
//   train/0000.parquet, default/train/0000.parquet     a folder named after the split
//   train.jsonl, test.parquet, test_prefs.jsonl         a file named after the split (train-1.jsonl: "train")
//   shard_0.parquet (no split named anywhere)          the "train" split, as datasets does
//
// Shards of a split are read in the order of their paths. Asking for "validation" also finds
// "valid", "val" or "dev"; "test" finds "testing"; "train" finds "training".
using System.Text.RegularExpressions;

namespace RlhfStudio.Engine.Data;

public sealed partial class DatasetFiles
{
    public static readonly IReadOnlyList<string> Extensions = [".jsonl", ".json", ".parquet"];

    // JSON files that datasets/hub tooling writes next to data and that are not data.
    private static readonly HashSet<string> MetadataFiles = new(StringComparer.OrdinalIgnoreCase)
    {
        "dataset_info.json", "dataset_dict.json", "state.json", "dataset_infos.json", "config.json",
    };

    private static readonly Dictionary<string, string[]> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["validation"] = ["valid", "val", "dev"],
        ["test"] = ["testing"],
        ["train"] = ["training"],
    };

    private readonly Dictionary<string, List<string>> _splits;

    private DatasetFiles(string path, bool isFile, Dictionary<string, List<string>> splits)
    {
        Path = path;
        IsFile = isFile;
        _splits = splits;
    }

    /// <summary>The file or folder given.</summary>
    public string Path { get; }
    /// <summary>True when <see cref="Path"/> is a single file (whose only split is "train").</summary>
    public bool IsFile { get; }
    /// <summary>Split names found, in order of their first file.</summary>
    public IReadOnlyList<string> Splits => _splits.Keys.ToList();

    /// <summary>Finds the data files under <paramref name="path"/>; throws <see cref="DatasetException"/> when
    /// the path is missing, of the wrong type, or a folder without data files.</summary>
    public static DatasetFiles Find(string path)
    {
        if (File.Exists(path))
        {
            var ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
            if (!Extensions.Contains(ext))
                throw DatasetException.ForFile(path, $"unsupported file type \"{ext}\": use .jsonl (JSON lines), .json (JSON lines) or .parquet, or a folder of them");
            return new DatasetFiles(path, true, new() { ["train"] = [path] });
        }
        if (!Directory.Exists(path))
            throw DatasetException.ForFile(path, $"dataset not found: no file or folder at {path}");

        var files = Directory.EnumerateFiles(path, "*", new EnumerationOptions { RecurseSubdirectories = true, MaxRecursionDepth = 3 })
            .Where(f => Extensions.Contains(System.IO.Path.GetExtension(f).ToLowerInvariant()) && !MetadataFiles.Contains(System.IO.Path.GetFileName(f)))
            .Select(f => System.IO.Path.GetRelativePath(path, f).Replace('\\', '/'))
            .Where(f => !f.Split('/').Any(part => part.StartsWith('.')))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0)
        {
            bool arrow = Directory.EnumerateFiles(path, "*.arrow", SearchOption.AllDirectories).Any();
            throw DatasetException.ForFile(path, arrow
                ? "the folder holds .arrow files (datasets' save_to_disk format), which are not supported: export with dataset.to_parquet(...) or to_json(...)"
                : "the folder has no data files (.jsonl, .json or .parquet, in the folder or in split folders such as data/ or train/)");
        }
        var splits = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var relative in files)
        {
            var split = SplitOf(relative);
            if (!splits.TryGetValue(split, out var list)) splits[split] = list = [];
            list.Add(System.IO.Path.Combine(path, relative));
        }
        return new DatasetFiles(path, false, splits);
    }

    /// <summary>The files of <paramref name="split"/> (or of an alias of it), in reading order.</summary>
    public IReadOnlyList<string> FilesOf(string split)
    {
        if (TryFilesOf(split, out var files)) return files;
        var name = System.IO.Path.GetFileName(Path.TrimEnd('/', '\\'));
        throw DatasetException.ForFile(Path, IsFile
            ? $"{name} is a single file, so it has no split \"{split}\": give a folder with split files, or no evaluation split to hold out a fraction of the rows"
            : $"no split \"{split}\": the folder has {string.Join(", ", Splits.Select(s => $"\"{s}\""))}");
    }

    public bool HasSplit(string split) => TryFilesOf(split, out _);

    private bool TryFilesOf(string split, out IReadOnlyList<string> files)
    {
        if (_splits.TryGetValue(split, out var list)) { files = list; return true; }
        if (!IsFile && Aliases.TryGetValue(split, out var aliases))
            foreach (var alias in aliases)
                if (_splits.TryGetValue(alias, out list)) { files = list; return true; }
        files = [];
        return false;
    }

    /// <summary>The split a file (path relative to the dataset folder, '/'-separated) belongs to.</summary>
    internal static string SplitOf(string relative)
    {
        var parts = relative.Split('/');
        var stem = System.IO.Path.GetFileNameWithoutExtension(parts[^1]);
        var shard = ShardName().Match(stem);
        if (shard.Success) return shard.Groups["split"].Value;
        if (parts.Length >= 2 && !parts[^2].Equals("data", StringComparison.OrdinalIgnoreCase)) return parts[^2];
        var name = NumberedName().Match(stem).Groups["name"].Value;
        return SplitWord().IsMatch(name) ? name.ToLowerInvariant() : "train";
    }

    [GeneratedRegex(@"^(?<split>.+?)-\d{5}-of-\d{5}")]
    private static partial Regex ShardName();

    // "train-3" and "train.0" are shards of "train"; "test_prefs" is a split of its own.
    [GeneratedRegex(@"^(?<name>.+?)(?:[-. ]\d+.*)?$")]
    private static partial Regex NumberedName();

    [GeneratedRegex(@"^(train|test|validation|valid|val|dev|eval)", RegexOptions.IgnoreCase)]
    private static partial Regex SplitWord();
}
