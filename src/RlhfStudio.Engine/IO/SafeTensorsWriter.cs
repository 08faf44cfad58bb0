using System.Buffers.Binary;
using System.Text.Json;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.IO;

/// <summary>Writes safetensors files, single or sharded with a Hugging Face <c>model.safetensors.index.json</c>.</summary>
public static class SafeTensorsWriter
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";
    /// <summary>Hugging Face's default max_shard_size ("5GB").</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>Writes <paramref name="tensors"/> to one file, keys sorted, with <c>{"format":"pt"}</c> metadata.
    /// Floating-point tensors are converted to <paramref name="floatDType"/> (when given) one at a time, as they are
    /// written. The file appears under its name only once complete (written to a temporary name, then moved).</summary>
    /// <returns>Bytes of tensor data written.</returns>
    public static long Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, ScalarType? floatDType = null,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var sorted = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var duplicate = sorted.Zip(sorted.Skip(1)).FirstOrDefault(p => p.First.Key == p.Second.Key);
        if (duplicate.First.Key is not null) throw new ArgumentException($"tensor \"{duplicate.First.Key}\" given twice", nameof(tensors));

        var header = BuildHeader(sorted, floatDType, metadata, out long dataBytes);
        string temp = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                stream.Write(len);
                stream.Write(header);
                foreach (var (_, tensor) in sorted)
                    WriteData(stream, tensor, TargetDType(tensor, floatDType));
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
        return dataBytes;
    }

    /// <summary>Writes <c>model.safetensors</c> into <paramref name="folder"/>, or, when the data exceeds
    /// <paramref name="maxShardBytes"/>, <c>model-0000i-of-0000n.safetensors</c> shards plus the index file
    /// (<c>{"metadata":{"total_size":N},"weight_map":{name:file}}</c>). Stale weight files of the other layout
    /// are removed so the folder has exactly one.</summary>
    /// <returns>The files written, weights first.</returns>
    public static IReadOnlyList<string> WriteFolder(string folder, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        ScalarType? floatDType = null, long maxShardBytes = DefaultMaxShardBytes)
    {
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), "must be positive");
        Directory.CreateDirectory(folder);
        var sorted = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();

        // Greedy split in key order, as transformers does: start a new shard when the next tensor would overflow.
        var shards = new List<List<KeyValuePair<string, Tensor>>> { new() };
        long current = 0, total = 0;
        foreach (var kv in sorted)
        {
            long size = StoredBytes(kv.Value, TargetDType(kv.Value, floatDType));
            if (current + size > maxShardBytes && shards[^1].Count > 0)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(kv);
            current += size;
            total += size;
        }

        foreach (var stale in Directory.EnumerateFiles(folder, "model*.safetensors").Append(Path.Combine(folder, IndexFileName)))
            if (File.Exists(stale)) File.Delete(stale);

        var written = new List<string>();
        if (shards.Count == 1)
        {
            var path = Path.Combine(folder, SingleFileName);
            Write(path, shards[0], floatDType, Metadata);
            written.Add(path);
            return written;
        }

        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            var path = Path.Combine(folder, name);
            Write(path, shards[i], floatDType, Metadata);
            written.Add(path);
            foreach (var kv in shards[i]) weightMap[kv.Key] = name;
        }
        var indexPath = Path.Combine(folder, IndexFileName);
        using (var stream = File.Create(indexPath))
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", total);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (k, v) in weightMap) json.WriteString(k, v);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        written.Add(indexPath);
        return written;
    }

    private static readonly IReadOnlyDictionary<string, string> Metadata = new Dictionary<string, string> { ["format"] = "pt" };

    private static ScalarType TargetDType(Tensor t, ScalarType? floatDType) =>
        floatDType is ScalarType f && SafeTensorsDType.IsFloating(t.dtype) ? f : t.dtype;

    private static long StoredBytes(Tensor t, ScalarType dtype) => checked(t.numel() * SafeTensorsDType.SizeOf(dtype));

    private static byte[] BuildHeader(List<KeyValuePair<string, Tensor>> sorted, ScalarType? floatDType,
        IReadOnlyDictionary<string, string>? metadata, out long dataBytes)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            foreach (var (k, v) in metadata ?? Metadata) json.WriteString(k, v);
            json.WriteEndObject();
            long offset = 0;
            foreach (var (name, tensor) in sorted)
            {
                var dtype = TargetDType(tensor, floatDType);
                long size = StoredBytes(tensor, dtype);
                json.WriteStartObject(name);
                json.WriteString("dtype", SafeTensorsDType.NameOf(dtype));
                json.WriteStartArray("shape");
                foreach (var d in tensor.shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + size);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += size;
            }
            json.WriteEndObject();
            dataBytes = offset;
        }
        // Pad with spaces so the data starts 8-byte aligned (as the reference writer does).
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    private static void WriteData(Stream stream, Tensor tensor, ScalarType dtype)
    {
        if (tensor.numel() == 0) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var cpu = tensor.detach().to(dtype, CPU).contiguous();
        using var flat = cpu.view(-1);
        long perChunk = Math.Max(1, SafeTensorsFile.ReadChunkBytes / SafeTensorsDType.SizeOf(dtype));
        for (long start = 0; start < flat.shape[0]; start += perChunk)
        {
            using var chunk = flat.narrow(0, start, Math.Min(perChunk, flat.shape[0] - start));
            stream.Write(chunk.bytes);
        }
    }
}
