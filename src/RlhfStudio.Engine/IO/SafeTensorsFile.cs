// Reader for the safetensors format (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
// the start of the data) plus an optional "__metadata__" string map. Everything in the header is
// untrusted: it is validated in full before any tensor is read.
using System.Buffers.Binary;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.IO;

/// <summary>One tensor entry of a safetensors header, validated.</summary>
public sealed record SafeTensorInfo(string Name, string DTypeName, ScalarType DType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
}

/// <summary>An open safetensors file whose header has been validated. Tensors are read one at a time,
/// straight from the file into torch memory.</summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted; real headers are well under 1 MB, and the header is read into memory.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    /// <summary>Largest slice read with one call (a Span is limited to 2 GB; tensors can be larger). Internal for tests.</summary>
    internal static long ReadChunkBytes { get; set; } = 1L << 30;

    private readonly FileStream _stream;
    private readonly long _dataStart;

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorsFile(string path, FileStream stream, long dataStart,
        Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Opens and validates a safetensors file. Throws <see cref="ModelLoadException"/> naming the file
    /// (and tensor) for anything malformed.</summary>
    public static SafeTensorsFile Open(string path)
    {
        CheckpointFiles.RefusePickle(path);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors reading needs a little-endian machine");
        FileStream stream;
        try { stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ModelLoadException.InFile(path, $"cannot be opened: {e.Message}", inner: e);
        }
        try
        {
            var (dataStart, tensors, metadata) = ReadHeader(path, stream);
            return new SafeTensorsFile(path, stream, dataStart, tensors, metadata);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static (long, Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ReadHeader(string path, FileStream stream)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw ModelLoadException.InFile(path, $"truncated: {fileLength} bytes, too short to hold the 8-byte header length");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)MaxHeaderBytes)
            throw ModelLoadException.InFile(path, $"header length {headerLength} bytes exceeds the {MaxHeaderBytes}-byte limit (not a safetensors file, or corrupt)");
        if (8 + (long)headerLength > fileLength)
            throw ModelLoadException.InFile(path, $"truncated: header says {headerLength} bytes but the file has only {fileLength - 8} after the length");

        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try { doc = JsonDocument.Parse(headerBytes); }
        catch (JsonException e) { throw ModelLoadException.InFile(path, $"header is not valid JSON ({e.Message})", inner: e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw ModelLoadException.InFile(path, "header is not a JSON object");
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (sawMetadata) throw ModelLoadException.InFile(path, "header has __metadata__ twice");
                    sawMetadata = true;
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw ModelLoadException.InFile(path, "__metadata__ is not a JSON object");
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                if (tensors.ContainsKey(prop.Name))
                    throw ModelLoadException.InFile(path, "listed twice in the header", prop.Name);
                tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataLength);
            }
            CheckOverlaps(path, tensors.Values);
            return (dataStart, tensors, metadata);
        }
    }

    private static SafeTensorInfo ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw ModelLoadException.InFile(path, "header entry is not a JSON object", name);
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw ModelLoadException.InFile(path, "header entry has no \"dtype\" string", name);
        string dtypeName = dt.GetString()!;
        if (!SafeTensorsDType.TryParse(dtypeName, out var dtype))
            throw ModelLoadException.InFile(path, $"unknown dtype \"{dtypeName}\" (readable: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)", name);

        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw ModelLoadException.InFile(path, "header entry has no \"shape\" array", name);
        var shape = new long[shapeEl.GetArrayLength()];
        int i = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw ModelLoadException.InFile(path, $"shape {shapeEl.GetRawText()} has a dimension that is not a non-negative integer", name);
            shape[i++] = v;
        }

        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw ModelLoadException.InFile(path, "header entry has no \"data_offsets\" [begin, end] pair", name);
        if (!offEl[0].TryGetInt64(out long begin) || !offEl[1].TryGetInt64(out long end) || begin < 0 || end < 0)
            throw ModelLoadException.InFile(path, $"data_offsets {offEl.GetRawText()} are not non-negative integers", name);
        if (begin > end)
            throw ModelLoadException.InFile(path, $"data_offsets {offEl.GetRawText()}: begin is after end", name);
        if (end > dataLength)
            throw ModelLoadException.InFile(path, $"data_offsets {offEl.GetRawText()} run past the end of the file's data ({dataLength} bytes): file truncated or corrupt", name);

        long expected;
        try
        {
            checked
            {
                long n = 1;
                foreach (var d in shape) n *= d;
                expected = n * SafeTensorsDType.SizeOf(dtype);
            }
        }
        catch (OverflowException)
        {
            throw ModelLoadException.InFile(path, $"shape [{string.Join(", ", shape)}] is too large (byte size overflows)", name);
        }
        if (expected != end - begin)
            throw ModelLoadException.InFile(path, $"data_offsets give {end - begin} bytes but {dtypeName} [{string.Join(", ", shape)}] needs {expected}", name);
        return new SafeTensorInfo(name, dtypeName, dtype, shape, begin, end);
    }

    private static void CheckOverlaps(string path, IEnumerable<SafeTensorInfo> tensors)
    {
        SafeTensorInfo? previous = null;
        foreach (var t in tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (previous is not null && t.Begin < previous.End)
                throw ModelLoadException.InFile(path, $"its bytes [{t.Begin}, {t.End}) overlap those of \"{previous.Name}\" [{previous.Begin}, {previous.End})", t.Name);
            previous = t;
        }
    }

    public SafeTensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info) ? info : throw ModelLoadException.InFile(Path, "not in this file", name);

    /// <summary>Reads one tensor into a new tensor of <paramref name="dtype"/> (default: as stored) on
    /// <paramref name="device"/> (default: CPU).</summary>
    public Tensor Read(string name, ScalarType? dtype = null, Device? device = null)
    {
        var info = Info(name);
        var result = torch.empty(info.Shape, dtype: dtype ?? info.DType, device: device ?? torch.CPU);
        try
        {
            ReadInto(name, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>Reads exactly <paramref name="targets"/> (file key -> tensor to fill, in place): a key of the file that is not
    /// among them is refused as <paramref name="unexpectedReason"/> says, a missing one as missing; nothing is read
    /// before both checks pass. For state written by this program (checkpointed adapters, heads), not HF folders.</summary>
    public void ReadExactlyInto(IReadOnlyDictionary<string, Tensor> targets, string unexpectedReason)
    {
        if (Tensors.Keys.Where(k => !targets.ContainsKey(k)).Order(StringComparer.Ordinal).FirstOrDefault() is { } unexpected)
            throw ModelLoadException.InFile(Path, unexpectedReason, unexpected);
        if (targets.Keys.Where(k => !Tensors.ContainsKey(k)).Order(StringComparer.Ordinal).FirstOrDefault() is { } missing)
            throw ModelLoadException.InFile(Path, "is missing", missing);
        foreach (var (key, target) in targets) ReadInto(key, target);
    }

    /// <summary>Copies one tensor into <paramref name="target"/> (same shape; any dtype and device: converted).
    /// When the target is a contiguous CPU tensor of the stored dtype the bytes go straight into it; otherwise one
    /// temporary of this tensor's size is used. Never holds more than one tensor's extra copy.</summary>
    public void ReadInto(string name, Tensor target)
    {
        var info = Info(name);
        if (!target.shape.SequenceEqual(info.Shape))
            throw ModelLoadException.InFile(Path, $"has shape [{string.Join(", ", info.Shape)}] in the file but [{string.Join(", ", target.shape)}] is expected", name);
        using var noGrad = torch.no_grad();
        if (target.dtype == info.DType && target.device_type == DeviceType.CPU && target.is_contiguous())
        {
            FillBytes(info, target);
            return;
        }
        using var staging = torch.empty(info.Shape, dtype: info.DType);
        FillBytes(info, staging);
        target.copy_(staging);
    }

    private void FillBytes(SafeTensorInfo info, Tensor destination)
    {
        if (info.ByteLength == 0) return;
        try
        {
            _stream.Position = _dataStart + info.Begin;
            int elementSize = SafeTensorsDType.SizeOf(info.DType);
            if (info.ByteLength <= ReadChunkBytes)
            {
                _stream.ReadExactly(destination.bytes);
                return;
            }
            // Spans stop at 2 GB: read a flat view chunk by chunk (whole elements per chunk).
            using var flat = destination.view(-1);
            long perChunk = Math.Max(1, ReadChunkBytes / elementSize);
            for (long start = 0; start < flat.shape[0]; start += perChunk)
            {
                using var chunk = flat.narrow(0, start, Math.Min(perChunk, flat.shape[0] - start));
                _stream.ReadExactly(chunk.bytes);
            }
        }
        catch (EndOfStreamException e)
        {
            throw ModelLoadException.InFile(Path, "file ended while reading the tensor's data (truncated?)", info.Name, e);
        }
        catch (IOException e)
        {
            throw ModelLoadException.InFile(Path, $"read failed: {e.Message}", info.Name, e);
        }
    }

    public void Dispose() => _stream.Dispose();
}
