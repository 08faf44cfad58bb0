using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Tests.Data;

public class DatasetTests
{
    private static string TextFile(DataFolder dir, int rows, string name = "d.jsonl") =>
        dir.Text(name, string.Join("\n", Enumerable.Range(0, rows).Select(i => $"{{\"text\":\"row {i}\"}}")) + "\n");

    private static List<string> Texts(Dataset data, DatasetPart part) =>
        data.Examples(part).Select(e => ((TextExample)e).Text).ToList();

    [Fact]
    public void Held_out_rows_are_the_same_every_time_exact_in_number_and_disjoint()
    {
        using var dir = new DataFolder();
        var path = TextFile(dir, 200);
        var source = new DatasetRef { Path = path, EvalFraction = 0.1 };
        var a = Dataset.Open(source, TrainingMethod.Sft, seed: 5);
        var train = Texts(a, DatasetPart.Train);
        var eval = Texts(a, DatasetPart.Eval);
        Assert.Equal(20, eval.Count);
        Assert.Equal(180, train.Count);
        Assert.Empty(train.Intersect(eval));
        Assert.Equal(200, train.Union(eval).Count());
        Assert.Equal((180L, 20L), (a.CountRows(DatasetPart.Train), a.CountRows(DatasetPart.Eval)));
        // Same seed: same rows; another seed: other rows.
        Assert.Equal(eval, Texts(Dataset.Open(source, TrainingMethod.Sft, seed: 5), DatasetPart.Eval));
        Assert.NotEqual(eval, Texts(Dataset.Open(source, TrainingMethod.Sft, seed: 6), DatasetPart.Eval));
        // Not simply the first or last rows.
        Assert.NotEqual(Enumerable.Range(0, 20).Select(i => $"row {i}"), eval);
    }

    [Fact]
    public void Small_sets_still_hold_out_a_row_and_zero_fraction_holds_out_none()
    {
        Assert.Single(HeldOutRows.Select(5, 0.05, 1));
        Assert.Empty(HeldOutRows.Select(1, 0.5, 1));
        Assert.Empty(HeldOutRows.Select(100, 0, 1));
        using var dir = new DataFolder();
        var data = Dataset.Open(new DatasetRef { Path = TextFile(dir, 10), EvalFraction = 0 }, TrainingMethod.Sft);
        Assert.Equal(10, Texts(data, DatasetPart.Train).Count);
        Assert.Empty(Texts(data, DatasetPart.Eval));
    }

    [Fact]
    public void Max_rows_limits_training_rows_only()
    {
        using var dir = new DataFolder();
        var data = Dataset.Open(new DatasetRef { Path = TextFile(dir, 50), EvalFraction = 0.2, MaxRows = 7 }, TrainingMethod.Sft);
        Assert.Equal(7, Texts(data, DatasetPart.Train).Count);
        Assert.Equal(7, data.CountRows(DatasetPart.Train));
        Assert.Equal(10, Texts(data, DatasetPart.Eval).Count);
    }

    [Fact]
    public void Shard_folder_with_named_splits_trains_and_evaluates_on_them()
    {
        using var dir = new DataFolder();
        for (int s = 0; s < 3; s++)
            dir.Parquet($"data/train-0000{s}-of-00003.parquet", Enumerable.Range(0, 4).Select(i => new PairedRow { Question = $"q{s}.{i}", ResponseJ = "good", ResponseK = "bad" }), rowGroupSize: 3);
        dir.Parquet("data/test-00000-of-00001.parquet", [new PairedRow { Question = "tq", ResponseJ = "good", ResponseK = "bad" }]);
        var data = Dataset.Open(new DatasetRef { Path = dir.Path, EvalSplit = "test" }, TrainingMethod.Reward);
        Assert.Equal(DatasetFormat.StackExchangePaired, data.Format);
        Assert.Equal(["test", "train"], data.Splits.Order());
        var train = data.Examples(DatasetPart.Train).Cast<PreferenceExample>().ToList();
        Assert.Equal(Enumerable.Range(0, 3).SelectMany(s => Enumerable.Range(0, 4).Select(i => $"q{s}.{i}")), train.Select(p => p.Prompt.Text));
        Assert.Equal("train-00002-of-00003.parquet row 3", train[^1].Source.ToString());
        Assert.Equal("tq", ((PreferenceExample)data.Examples(DatasetPart.Eval).Single()).Prompt.Text);
        Assert.Equal((12L, 1L), (data.CountRows(DatasetPart.Train), data.CountRows(DatasetPart.Eval)));
        Assert.Equal("split \"test\"", data.EvalDescription);
    }

    [Fact]
    public void Training_stops_at_the_first_bad_row_with_its_message()
    {
        using var dir = new DataFolder();
        var path = dir.Text("data.jsonl", "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\":\"c\"}\n{nope\n");
        var data = Dataset.Open(new DatasetRef { Path = path, EvalFraction = 0 }, TrainingMethod.Sft);
        using var e = data.Examples(DatasetPart.Train).GetEnumerator();
        Assert.True(e.MoveNext());
        var ex = Assert.Throws<DatasetException>(() => e.MoveNext());
        Assert.Equal("data.jsonl line 2: field \"completion\" missing", ex.Message);
    }

    [Fact]
    public void Opening_checks_the_method_against_the_columns()
    {
        using var dir = new DataFolder();
        var path = dir.Jsonl("x.jsonl", new { a = 1, b = 2 });
        var ex = Assert.Throws<DatasetException>(() => Dataset.Open(new DatasetRef { Path = path }, TrainingMethod.Sft));
        Assert.Contains("dataset x.jsonl has columns [a, b]; SFT needs `text`", ex.Message);
        var empty = dir.Text("empty.jsonl", "");
        Assert.Equal("empty.jsonl: the file is empty (no JSON lines)",
            Assert.Throws<DatasetException>(() => Dataset.Open(new DatasetRef { Path = empty }, TrainingMethod.Sft)).Message);
        var emptyParquet = dir.Parquet("none.parquet", Array.Empty<TextRow>());
        Assert.Equal("none.parquet: the file has no rows",
            Assert.Throws<DatasetException>(() => Dataset.Open(new DatasetRef { Path = emptyParquet }, TrainingMethod.Sft)).Message);
        Assert.Contains("unknown built-in dataset \"algebra\"",
            Assert.Throws<DatasetException>(() => Dataset.Open(new DatasetRef { Builtin = "algebra" }, TrainingMethod.Sft)).Message);
    }

    [Fact]
    public void Preview_shows_rows_as_the_trainer_sees_them_and_collects_errors_without_stopping()
    {
        using var dir = new DataFolder();
        var lines = new List<string>();
        for (int i = 0; i < 30; i++)
            lines.Add(i switch
            {
                7 => "{\"prompt\":\"What is 1 + 1?\"}",
                12 => "not json",
                20 => "{\"prompt\":null,\"completion\":\"2\"}",
                _ => $"{{\"prompt\":\"What is {i} + 1?\",\"completion\":\"{i + 1}\"}}",
            });
        var path = dir.Text("data.jsonl", string.Join("\n", lines));
        var tokenizer = TextTokenizer.BuiltIn();
        var preview = DatasetPreview.Create(new DatasetRef { Path = path, EvalFraction = 0.1 }, TrainingMethod.Sft,
            new PreviewOptions { Rows = 3, Tokenizer = tokenizer, Seed = 1 });
        Assert.Null(preview.Problem);
        Assert.Equal(DatasetFormat.PromptCompletion, preview.Format);
        Assert.Equal(["prompt", "completion"], preview.Columns);
        Assert.Equal((27L, 3L), (preview.TotalRows, preview.EvalRows));
        Assert.Equal(3, preview.Rows.Count);
        var first = preview.Rows[0].Texts.Single();
        Assert.StartsWith("Question: What is ", first.Prompt);
        Assert.EndsWith("\n\nAnswer: ", first.Prompt);
        Assert.Equal(tokenizer.Encode(first.Completion).Count + 1, first.CompletionTokens); // + EOS
        Assert.True(first.PromptTokens > 5);
        // All three bad rows are reported, from training and held-out rows alike.
        var errors = preview.Errors.Select(e => e.Text).ToList();
        Assert.Equal(3, errors.Count);
        Assert.Contains("data.jsonl line 8: field \"completion\" missing", errors);
        Assert.Contains(errors, e => e.StartsWith("data.jsonl line 13: not valid JSON (", StringComparison.Ordinal));
        Assert.Contains("data.jsonl line 21: \"prompt\" is null", errors);
        Assert.Equal(30, preview.RowsScanned);
        Assert.True(preview.ScanComplete);
    }

    [Fact]
    public void Preview_stops_collecting_at_max_errors_and_reports_open_problems()
    {
        using var dir = new DataFolder();
        var path = dir.Text("bad.jsonl", "{\"text\":\"ok\"}\n" + string.Join("\n", Enumerable.Repeat("{\"text\":1}", 50)));
        var preview = DatasetPreview.Create(new DatasetRef { Path = path, EvalFraction = 0 }, TrainingMethod.Sft, new PreviewOptions { MaxErrors = 4 });
        Assert.Equal(4, preview.Errors.Count);
        Assert.False(preview.ScanComplete);
        var missing = DatasetPreview.Create(new DatasetRef { Path = dir.File("gone.jsonl") }, TrainingMethod.Sft);
        Assert.NotNull(missing.Problem);
        Assert.Contains("dataset not found", missing.Problem);
        Assert.Null(missing.Format);
    }

    [Fact]
    public void Preview_renders_preferences_through_the_template()
    {
        var row = DatasetPreview.Render(PreferenceExample.Of("Hi", "Hello", "Go away"), PromptTemplates.ChatMl, TextTokenizer.BuiltIn());
        Assert.Equal(["chosen", "rejected"], row.Texts.Select(t => t.Label));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", row.Texts[0].Prompt);
        Assert.Equal("Hello<|im_end|>\n", row.Texts[0].Completion);
        Assert.Equal("Go away<|im_end|>\n", row.Texts[1].Completion);
    }
}
