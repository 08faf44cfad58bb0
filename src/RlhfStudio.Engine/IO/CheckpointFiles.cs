using System.Text.Json;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.IO;

/// <summary>The weights of one Hugging Face model folder: <c>model.safetensors</c>, or shards listed in
/// <c>model.safetensors.index.json</c>. Pickle checkpoints are refused.</summary>
public sealed class CheckpointFiles : IDisposable
{
    private static readonly string[] PickleExtensions = [".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"];

    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, SafeTensorsFile> _where;

    /// <summary>Tensor names and the file holding each.</summary>
    public IReadOnlyDictionary<string, SafeTensorsFile> Tensors => _where;
    public string Folder { get; }

    private CheckpointFiles(string folder, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> where)
    {
        Folder = folder;
        _files = files;
        _where = where;
    }

    /// <summary>Throws when <paramref name="path"/> is a pickle checkpoint (by extension).</summary>
    public static void RefusePickle(string path)
    {
        var ext = Path.GetExtension(path).ToLowerInvariant();
        if (PickleExtensions.Contains(ext))
            throw ModelLoadException.InFile(path, "is a PyTorch pickle checkpoint. Pickle files can execute arbitrary code when " +
                "loaded, so only safetensors weights are loaded. Convert it to model.safetensors (e.g. with transformers' " +
                "save_pretrained(..., safe_serialization=True)) in a trusted environment.");
    }

    public static CheckpointFiles Open(string folder)
    {
        if (!Directory.Exists(folder)) throw new ModelLoadException($"{folder}: model folder not found") { FilePath = folder };
        var index = Path.Combine(folder, SafeTensorsWriter.IndexFileName);
        var single = Path.Combine(folder, SafeTensorsWriter.SingleFileName);
        if (File.Exists(index)) return OpenSharded(folder, index);
        if (File.Exists(single)) return OpenFiles(folder, [single]);

        var pickle = Directory.EnumerateFiles(folder)
            .FirstOrDefault(f => PickleExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()));
        if (pickle is not null) RefusePickle(pickle);
        var others = Directory.EnumerateFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (others.Count == 1) return OpenFiles(folder, others);
        throw new ModelLoadException($"{folder}: no {SafeTensorsWriter.SingleFileName} or {SafeTensorsWriter.IndexFileName} in the model folder") { FilePath = folder };
    }

    private static CheckpointFiles OpenSharded(string folder, string indexPath)
    {
        Dictionary<string, string> weightMap = new(StringComparer.Ordinal);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw ModelLoadException.InFile(indexPath, "has no \"weight_map\" object");
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw ModelLoadException.InFile(indexPath, "weight_map value is not a file name", p.Name);
                var file = p.Value.GetString()!;
                if (file != Path.GetFileName(file) || file.Length == 0)
                    throw ModelLoadException.InFile(indexPath, $"weight_map names \"{file}\", which is not a plain file name in the folder", p.Name);
                weightMap[p.Name] = file;
            }
        }
        catch (JsonException e)
        {
            throw ModelLoadException.InFile(indexPath, $"is not valid JSON ({e.Message})", inner: e);
        }

        var shardNames = weightMap.Values.Distinct().Order(StringComparer.Ordinal).ToList();
        foreach (var name in shardNames)
            if (!File.Exists(Path.Combine(folder, name)))
                throw ModelLoadException.InFile(Path.Combine(folder, name), $"shard listed in {SafeTensorsWriter.IndexFileName} is missing");
        var result = OpenFiles(folder, shardNames.Select(n => Path.Combine(folder, n)).ToList());
        try
        {
            foreach (var (tensor, file) in weightMap)
            {
                var path = Path.Combine(folder, file);
                if (!result._where.TryGetValue(tensor, out var actual))
                    throw ModelLoadException.InFile(path, $"is listed in {SafeTensorsWriter.IndexFileName} but missing from the shard", tensor);
                if (actual.Path != path)
                    throw ModelLoadException.InFile(path, $"is listed in {SafeTensorsWriter.IndexFileName} for this shard but is stored in {actual.Path}", tensor);
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    private static CheckpointFiles OpenFiles(string folder, List<string> paths)
    {
        var files = new List<SafeTensorsFile>();
        var where = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var path in paths)
            {
                var file = SafeTensorsFile.Open(path);
                files.Add(file);
                foreach (var name in file.Tensors.Keys)
                {
                    if (where.TryGetValue(name, out var other))
                        throw ModelLoadException.InFile(path, $"is also stored in {other.Path}", name);
                    where[name] = file;
                }
            }
            return new CheckpointFiles(folder, files, where);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    public SafeTensorInfo Info(string name) => Where(name).Info(name);

    /// <summary>Copies a tensor into <paramref name="target"/>, converting dtype.</summary>
    public void ReadInto(string name, Tensor target) => Where(name).ReadInto(name, target);

    public Tensor Read(string name, ScalarType? dtype = null) => Where(name).Read(name, dtype);

    private SafeTensorsFile Where(string name) =>
        _where.TryGetValue(name, out var file) ? file
            : throw new ModelLoadException($"{Folder}: tensor \"{name}\" is not in the checkpoint") { FilePath = Folder, TensorName = name };

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
