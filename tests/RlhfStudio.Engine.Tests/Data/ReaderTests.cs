using RlhfStudio.Engine.Data;

namespace RlhfStudio.Engine.Tests.Data;

public class ReaderTests
{
    [Fact]
    public void Jsonl_values_are_normalised_and_lines_numbered_like_an_editor()
    {
        using var dir = new DataFolder();
        var path = dir.Text("d.jsonl", "{\"s\":\"a\",\"n\":3,\"x\":1.5,\"b\":true,\"z\":null,\"l\":[1,\"two\"],\"o\":{\"k\":\"v\"}}\n\n  \n{\"s\":\"b\"}\n");
        var rows = JsonlFile.Read(path).ToList();
        Assert.Equal(2, rows.Count);
        var v = rows[0].Values;
        Assert.Equal("a", v["s"]);
        Assert.Equal(typeof(long), v["n"]!.GetType());
        Assert.Equal(3L, (long)v["n"]!);
        Assert.Equal(1.5, v["x"]);
        Assert.Equal(true, v["b"]);
        Assert.Null(v["z"]);
        Assert.Equal(new object?[] { 1L, "two" }, (IReadOnlyList<object?>)v["l"]!);
        Assert.Equal("v", ((IReadOnlyDictionary<string, object?>)v["o"]!)["k"]);
        Assert.Equal("d.jsonl line 1", rows[0].Location.ToString());
        Assert.Equal("d.jsonl line 4", rows[1].Location.ToString());
        Assert.Equal(2, JsonlFile.CountRows(path));
        Assert.Equal(["s", "n", "x", "b", "z", "l", "o"], JsonlFile.Columns(path));
    }

    [Fact]
    public void Jsonl_is_read_lazily_so_bad_lines_after_the_first_rows_do_not_matter()
    {
        using var dir = new DataFolder();
        // Three good lines, then far more than a read buffer (64 KiB) of lines that are not JSON.
        var good = Enumerable.Range(0, 3).Select(i => $"{{\"text\":\"row {i}\"}}");
        var bad = Enumerable.Repeat("this is { not json at all " + new string('x', 200), 2000);
        var path = dir.Text("big.jsonl", string.Join("\n", good.Concat(bad)));
        Assert.True(new FileInfo(path).Length > 300_000);
        var first = JsonlFile.Read(path).Take(3).Select(r => r.EnsureReadable().Values["text"]).ToList();
        Assert.Equal(["row 0", "row 1", "row 2"], first);
        // ...and the fourth row is the bad one, reported with its line.
        var fourth = JsonlFile.Read(path).ElementAt(3);
        Assert.StartsWith("big.jsonl line 4: not valid JSON (", fourth.Error!.Text);
        Assert.Equal(2003, JsonlFile.CountRows(path));
    }

    [Fact]
    public void Jsonl_errors_name_the_line()
    {
        using var dir = new DataFolder();
        var path = dir.Text("e.jsonl", "{\"a\":1}\n{\"a\": }\n[1,2]\n\"str\"\n");
        var rows = JsonlFile.Read(path).ToList();
        Assert.Null(rows[0].Error);
        Assert.Matches(@"^e\.jsonl line 2: not valid JSON \(.+, at byte \d+\)$", rows[1].Error!.Text);
        Assert.StartsWith("e.jsonl line 3: expected a JSON object, got an array; a file holding one JSON array is not JSON lines", rows[2].Error!.Text);
        Assert.Equal("e.jsonl line 4: expected a JSON object, got a string", rows[3].Error!.Text);
        var ex = Assert.Throws<DatasetException>(() => rows[1].EnsureReadable());
        Assert.Equal(2, ex.Issue.Location!.Value.Number);
    }

    [Fact]
    public void A_pretty_printed_json_array_gets_a_hint()
    {
        using var dir = new DataFolder();
        var path = dir.Text("arr.json", "[\n  {\"text\": \"a\"}\n]\n");
        var ex = Assert.Throws<DatasetException>(() => JsonlFile.Columns(path));
        Assert.StartsWith("arr.json line 1: not valid JSON (", ex.Message);
        Assert.EndsWith("a file holding one JSON array is not JSON lines: write one object per line", ex.Message);
    }

    [Fact]
    public void Empty_jsonl_has_no_columns()
    {
        using var dir = new DataFolder();
        var path = dir.Text("empty.jsonl", "\n  \n");
        var ex = Assert.Throws<DatasetException>(() => JsonlFile.Columns(path));
        Assert.Equal("empty.jsonl: the file is empty (no JSON lines)", ex.Message);
        Assert.Equal(0, JsonlFile.CountRows(path));
    }

    [Fact]
    public void Parquet_reads_row_groups_in_order_with_types_nulls_and_nested_messages()
    {
        using var dir = new DataFolder();
        var path = dir.Parquet("c.parquet", Enumerable.Range(0, 7).Select(i => new ConversationRow
        {
            Id = i,
            Messages = i == 4 ? null : [new() { Role = "user", Content = $"q{i}" }, new() { Role = "assistant", Content = $"a{i}" }],
        }), rowGroupSize: 3);
        Assert.Equal(7, ParquetFile.CountRows(path));
        Assert.Equal(["messages", "id"], ParquetFile.Columns(path));
        var rows = ParquetFile.Read(path).ToList();
        Assert.Equal(Enumerable.Range(0, 7).Select(i => (long)i), rows.Select(r => (long)r.Values["id"]!));
        Assert.Equal("c.parquet row 5", rows[5].Location.ToString());
        Assert.True(rows[4].Values.ContainsKey("messages"));
        Assert.Null(rows[4].Values["messages"]);
        var messages = (IReadOnlyList<object?>)rows[6].Values["messages"]!;
        var second = (IReadOnlyDictionary<string, object?>)messages[1]!;
        Assert.Equal("assistant", second["role"]);
        Assert.Equal("a6", second["content"]);
    }

    [Fact]
    public void Parquet_scalars_and_string_lists_become_plain_values()
    {
        using var dir = new DataFolder();
        var path = dir.Parquet("m.parquet", [new MixedRow { Text = "t", N = 5, X = 0.25, Flag = true, Tags = ["a", "b"] }]);
        var v = ParquetFile.Read(path).Single().Values;
        Assert.Equal("t", v["text"]);
        Assert.Equal(5L, v["n"]);
        Assert.Equal(0.25, v["x"]);
        Assert.Equal(true, v["flag"]);
        Assert.Equal(new object?[] { "a", "b" }, (IReadOnlyList<object?>)v["tags"]!);
    }

    [Fact]
    public async Task Parquet_is_read_one_row_group_at_a_time()
    {
        using var dir = new DataFolder();
        var path = dir.Parquet("g.parquet", Enumerable.Range(0, 6).Select(i => new TextRow { Text = $"t{i}" }), rowGroupSize: 3);
        // Overwrite the second row group's data pages (the footer stays intact): the first group still reads.
        long offset;
        await using (var reader = await Parquet.ParquetReader.CreateAsync(path))
        {
            Assert.Equal(2, reader.RowGroupCount);
            offset = reader.RowGroups[1].RowGroup.Columns[0].MetaData!.DataPageOffset;
        }
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            f.Position = offset;
            f.Write(Enumerable.Repeat((byte)0xFF, 16).ToArray());
        }
        Assert.Equal(["t0", "t1", "t2"], ParquetFile.Read(path).Take(3).Select(r => (string)r.Values["text"]!));
        Assert.Equal(6, ParquetFile.CountRows(path));
        var ex = Assert.Throws<DatasetException>(() => ParquetFile.Read(path).ToList());
        Assert.StartsWith("g.parquet row 3: cannot read row group 1 (", ex.Message);
    }

    [Fact]
    public void Corrupt_parquet_names_the_file()
    {
        using var dir = new DataFolder();
        var path = dir.Text("bad.parquet", "this is not parquet");
        var ex = Assert.Throws<DatasetException>(() => ParquetFile.CountRows(path));
        Assert.StartsWith("bad.parquet: not a readable Parquet file (", ex.Message);
    }

    [Fact]
    public void Shard_folders_find_splits_in_every_hub_layout()
    {
        using var dir = new DataFolder();
        for (int i = 0; i < 3; i++) dir.Parquet($"train-0000{i}-of-00003.parquet", [new TextRow { Text = $"shard {i}" }]);
        dir.Parquet("data/test-00000-of-00001-abc123.parquet", [new TextRow { Text = "t" }]);
        dir.Parquet("data/train_prefs-00000-of-00001.parquet", [new TextRow { Text = "p" }]);
        dir.Jsonl("validation.jsonl", new { text = "v" });
        dir.Parquet("extra/0000.parquet", [new TextRow { Text = "e" }]);
        dir.Text("dataset_info.json", "{}");
        dir.Text("README.md", "# card");
        var files = DatasetFiles.Find(dir.Path);
        Assert.Equal(["extra", "test", "train", "train_prefs", "validation"], files.Splits.Order(StringComparer.Ordinal));
        Assert.Equal(["train-00000-of-00003.parquet", "train-00001-of-00003.parquet", "train-00002-of-00003.parquet"],
            files.FilesOf("train").Select(Path.GetFileName));
        Assert.Equal("validation.jsonl", Path.GetFileName(files.FilesOf("validation").Single()));
        var ex = Assert.Throws<DatasetException>(() => files.FilesOf("dev2"));
        Assert.Contains("no split \"dev2\": the folder has", ex.Message);
        Assert.Contains("\"train\"", ex.Message);
    }

    [Theory]
    [InlineData("train-00000-of-00002.parquet", "train")]
    [InlineData("data/test-00001-of-00002-9f8e.parquet", "test")]
    [InlineData("default/validation/0000.parquet", "validation")]
    [InlineData("train/part-1.parquet", "train")]
    [InlineData("test.jsonl", "test")]
    [InlineData("train-3.jsonl", "train")]
    [InlineData("test_prefs.jsonl", "test_prefs")]
    [InlineData("data/dev.json", "dev")]
    [InlineData("shard_0.parquet", "train")]
    [InlineData("data/part-0001.parquet", "train")]
    public void Split_of_a_file_follows_the_hub_conventions(string relative, string split) =>
        Assert.Equal(split, DatasetFiles.SplitOf(relative));

    [Fact]
    public void Split_aliases_find_valid_and_dev()
    {
        using var dir = new DataFolder();
        dir.Jsonl("train.jsonl", new { text = "a" });
        dir.Jsonl("valid.jsonl", new { text = "b" });
        var files = DatasetFiles.Find(dir.Path);
        Assert.Equal("valid.jsonl", Path.GetFileName(files.FilesOf("validation").Single()));
    }

    [Fact]
    public void Missing_path_wrong_extension_and_empty_folders_have_clear_messages()
    {
        using var dir = new DataFolder();
        var missing = Assert.Throws<DatasetException>(() => DatasetFiles.Find(dir.File("nope.jsonl")));
        Assert.Contains("dataset not found: no file or folder at", missing.Message);
        var csv = dir.Text("d.csv", "a,b\n");
        Assert.Equal("d.csv: unsupported file type \".csv\": use .jsonl (JSON lines), .json (JSON lines) or .parquet, or a folder of them",
            Assert.Throws<DatasetException>(() => DatasetFiles.Find(csv)).Message);
        var empty = Directory.CreateDirectory(dir.File("empty")).FullName;
        dir.Text("empty/README.md", "nothing");
        Assert.Equal("empty: the folder has no data files (.jsonl, .json or .parquet, in the folder or in split folders such as data/ or train/)",
            Assert.Throws<DatasetException>(() => DatasetFiles.Find(empty)).Message);
        dir.Text("arrow/data-00000-of-00001.arrow", "x");
        Assert.Contains("save_to_disk", Assert.Throws<DatasetException>(() => DatasetFiles.Find(dir.File("arrow"))).Message);
    }

    [Fact]
    public void A_single_file_is_the_train_split_and_has_no_other()
    {
        using var dir = new DataFolder();
        var path = dir.Jsonl("d.jsonl", new { text = "a" });
        var files = DatasetFiles.Find(path);
        Assert.Equal([path], files.FilesOf("train"));
        Assert.Contains("d.jsonl is a single file, so it has no split \"test\"", Assert.Throws<DatasetException>(() => files.FilesOf("test")).Message);
    }
}
