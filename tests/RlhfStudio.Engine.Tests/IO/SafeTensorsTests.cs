using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.IO;

public class SafeTensorsTests
{
    /// <summary>Writes [u64 header length][header][data] by hand.</summary>
    private static string WriteRaw(TempDir dir, string header, int dataBytes, string name = "bad.safetensors", long? claimedHeaderLength = null)
    {
        var path = dir[name];
        var h = Encoding.UTF8.GetBytes(header);
        using var f = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)(claimedHeaderLength ?? h.Length));
        f.Write(len);
        f.Write(h);
        f.Write(new byte[dataBytes]);
        return path;
    }

    private static ModelLoadException OpenFails(string path) => Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(path).Dispose());

    [Fact]
    public void Round_trip_keeps_values_dtypes_and_writes_a_valid_sorted_header()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        var f32 = torch.randn(3, 5);
        var tensors = new Dictionary<string, Tensor>
        {
            ["z.f32"] = f32,
            ["a.bf16"] = torch.randn(4, 2).to(ScalarType.BFloat16),
            ["m.f16"] = torch.randn(7).to(ScalarType.Float16),
            ["i64"] = torch.tensor(new long[] { 1, -2, long.MaxValue }),
            ["mask"] = torch.tensor(new[] { true, false, true }),
            ["empty"] = torch.zeros(0, 3),
        };
        var path = dir["t.safetensors"];
        SafeTensorsWriter.Write(path, tensors);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        foreach (var (name, t) in tensors)
        {
            var back = file.Read(name);
            Assert.Equal(t.dtype, back.dtype);
            Assert.Equal(t.shape, back.shape);
            Assert.True(TestModels.Same(t, back), name);
        }
        Assert.Equal("BF16", file.Info("a.bf16").DTypeName);

        // Header: length is a multiple of 8, keys sorted, metadata first, tensors laid end to end.
        var bytes = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerLength % 8);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength));
        var keys = doc.RootElement.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal("__metadata__", keys[0]);
        Assert.Equal(keys.Skip(1).Order(StringComparer.Ordinal), keys.Skip(1));
        Assert.Equal(bytes.Length - 8 - headerLength, file.Tensors.Values.Sum(t => t.ByteLength));

        // Conversion on read and into an existing tensor of another dtype.
        var asBf16 = file.Read("z.f32", ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, asBf16.dtype);
        Assert.True(TestModels.Same(asBf16, f32.to(ScalarType.BFloat16)));
        var target = torch.zeros(3, 5, dtype: ScalarType.Float64);
        file.ReadInto("z.f32", target);
        Assert.True(TestModels.Same(target, f32.to(ScalarType.Float64)));
    }

    [Fact]
    public void Writer_converts_floating_tensors_only_and_reader_reads_large_tensors_in_chunks()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        var x = torch.randn(100, 3);
        var path = dir["c.safetensors"];
        SafeTensorsWriter.Write(path, new Dictionary<string, Tensor> { ["x"] = x, ["ids"] = torch.arange(5L) }, ScalarType.BFloat16);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("BF16", file.Info("x").DTypeName);
        Assert.Equal("I64", file.Info("ids").DTypeName);

        var old = SafeTensorsFile.ReadChunkBytes;
        SafeTensorsFile.ReadChunkBytes = 14;   // 7 bf16 elements per read: many chunks, a short last one
        try
        {
            Assert.True(TestModels.Same(file.Read("x"), x.to(ScalarType.BFloat16)));
        }
        finally
        {
            SafeTensorsFile.ReadChunkBytes = old;
        }
    }

    [Fact]
    public void Truncated_file_is_refused_naming_the_file()
    {
        using var dir = new TempDir();
        var tiny = dir["tiny.safetensors"];
        File.WriteAllBytes(tiny, [1, 2, 3]);
        var e = OpenFails(tiny);
        Assert.Contains(tiny, e.Message);
        Assert.Contains("truncated", e.Message);

        var header = """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}""";
        var shortHeader = WriteRaw(dir, header, 0, "short-header.safetensors", claimedHeaderLength: header.Length + 100);
        Assert.Contains("truncated", OpenFails(shortHeader).Message);

        var shortData = WriteRaw(dir, header, 8, "short-data.safetensors");   // 8 of 16 data bytes
        var d = OpenFails(shortData);
        Assert.Contains(shortData, d.Message);
        Assert.Contains("\"w\"", d.Message);
    }

    [Fact]
    public void Oversized_or_non_json_header_is_refused()
    {
        using var dir = new TempDir();
        var huge = WriteRaw(dir, "{}", 0, "huge.safetensors", claimedHeaderLength: 200L * 1024 * 1024);
        var e = OpenFails(huge);
        Assert.Contains(huge, e.Message);
        Assert.Contains("limit", e.Message);

        var notJson = WriteRaw(dir, "this is not json", 0, "notjson.safetensors");
        var j = OpenFails(notJson);
        Assert.Contains(notJson, j.Message);
        Assert.Contains("not valid JSON", j.Message);
        Assert.Contains("not a JSON object", OpenFails(WriteRaw(dir, "[1,2]", 0, "array.safetensors")).Message);
    }

    [Theory]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,32]}}""", "run past the end")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}""", "needs 16")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}}""", "begin is after end")]
    [InlineData("""{"w":{"dtype":"Q4","shape":[2,2],"data_offsets":[0,16]}}""", "unknown dtype \"Q4\"")]
    [InlineData("""{"w":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}}""", "not a non-negative integer")]
    [InlineData("""{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}""", "overflows")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,2]}}""", "data_offsets")]
    [InlineData("""{"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[4,20]}}""", "overlap")]
    public void Bad_tensor_entries_are_refused_naming_file_and_tensor(string header, string problem)
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir, header, 24);
        var e = OpenFails(path);
        Assert.Contains(path, e.Message);
        Assert.Contains("\"w\"", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.Equal("w", e.TensorName);
    }

    [Fact]
    public void Metadata_is_allowed_and_zero_length_tensors_do_not_count_as_overlapping()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir, """{"__metadata__":{"format":"pt","note":"x"},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}""", 3);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("x", file.Metadata["note"]);
        Assert.Equal(2, file.Tensors.Count);
    }

    [Fact]
    public void Sharded_folder_round_trips_through_the_index()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        var tensors = Enumerable.Range(0, 5).ToDictionary(i => $"layer.{i}.weight", i => torch.randn(10, 10));   // 400 bytes each
        var written = SafeTensorsWriter.WriteFolder(dir.Path, tensors, maxShardBytes: 1000);
        Assert.Contains(dir["model.safetensors.index.json"], written);
        Assert.Equal(3, Directory.GetFiles(dir.Path, "model-*-of-00003.safetensors").Length);
        Assert.False(File.Exists(dir["model.safetensors"]));

        using var doc = JsonDocument.Parse(File.ReadAllText(dir["model.safetensors.index.json"]));
        Assert.Equal(2000, doc.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        Assert.Equal("model-00001-of-00003.safetensors", doc.RootElement.GetProperty("weight_map").GetProperty("layer.0.weight").GetString());

        using (var checkpoint = CheckpointFiles.Open(dir.Path))
        {
            Assert.Equal(5, checkpoint.Tensors.Count);
            foreach (var (name, t) in tensors) Assert.True(TestModels.Same(checkpoint.Read(name), t), name);
        }

        // Writing again unsharded replaces the shards: one layout per folder.
        SafeTensorsWriter.WriteFolder(dir.Path, tensors);
        Assert.True(File.Exists(dir["model.safetensors"]));
        Assert.Empty(Directory.GetFiles(dir.Path, "model-*"));
        Assert.False(File.Exists(dir["model.safetensors.index.json"]));
    }

    [Fact]
    public void Index_that_disagrees_with_its_shards_is_refused()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        var tensors = Enumerable.Range(0, 3).ToDictionary(i => $"t{i}", _ => torch.randn(10, 10));
        SafeTensorsWriter.WriteFolder(dir.Path, tensors, maxShardBytes: 500);
        var indexPath = dir["model.safetensors.index.json"];
        var index = File.ReadAllText(indexPath);

        File.WriteAllText(indexPath, index.Replace("\"t2\"", "\"ghost\""));
        var e = Assert.Throws<ModelLoadException>(() => CheckpointFiles.Open(dir.Path).Dispose());
        Assert.Contains("ghost", e.Message);
        Assert.Contains("model-00003-of-00003.safetensors", e.Message);

        File.WriteAllText(indexPath, index);
        File.Delete(dir["model-00002-of-00003.safetensors"]);
        var m = Assert.Throws<ModelLoadException>(() => CheckpointFiles.Open(dir.Path).Dispose());
        Assert.Contains("model-00002-of-00003.safetensors", m.Message);
        Assert.Contains("missing", m.Message);
    }

    [Theory]
    [InlineData("pytorch_model.bin")]
    [InlineData("model.pt")]
    [InlineData("weights.pth")]
    [InlineData("last.ckpt")]
    public void Pickle_checkpoints_are_refused(string fileName)
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir[fileName], [0x80, 0x02]);   // pickle protocol header
        var e = Assert.Throws<ModelLoadException>(() => CheckpointFiles.Open(dir.Path).Dispose());
        Assert.Contains(fileName, e.Message);
        Assert.Contains("execute arbitrary code", e.Message);
        Assert.Contains("safetensors", e.Message);
        Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(dir[fileName]).Dispose());
    }
}
