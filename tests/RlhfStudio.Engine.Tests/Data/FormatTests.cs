using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Tests.Data;

public class FormatTests
{
    private static DatasetRow Row(string json, int line = 1)
    {
        using var dir = new DataFolder();
        var path = dir.Text("data.jsonl", string.Concat(Enumerable.Repeat("\n", line - 1)) + json + "\n");
        return JsonlFile.Read(path).Single();
    }

    private static Example Convert(string json, ColumnMap? map = null, int line = 1)
    {
        var row = Row(json, line);
        var format = DatasetFormats.Detect(((map ?? ColumnMap.None).Expected(row.Values.Keys.ToList())))
            ?? throw new InvalidOperationException("no format");
        return DatasetFormats.Convert(row, format, map ?? ColumnMap.None);
    }

    private static string Error(string json, int line = 1, ColumnMap? map = null) =>
        Assert.Throws<DatasetException>(() => Convert(json, map, line)).Message;

    [Theory]
    [InlineData(new[] { "text" }, DatasetFormat.Text)]
    [InlineData(new[] { "prompt", "completion" }, DatasetFormat.PromptCompletion)]
    [InlineData(new[] { "messages", "prompt" }, DatasetFormat.Conversational)]
    [InlineData(new[] { "prompt", "chosen", "rejected" }, DatasetFormat.Preference)]
    [InlineData(new[] { "chosen", "rejected", "messages" }, DatasetFormat.Preference)]
    [InlineData(new[] { "prompt", "id" }, DatasetFormat.PromptOnly)]
    [InlineData(new[] { "instruction", "input", "output" }, DatasetFormat.Alpaca)]
    [InlineData(new[] { "qid", "question", "response_j", "response_k" }, DatasetFormat.StackExchangePaired)]
    [InlineData(new[] { "qid", "question", "answers" }, DatasetFormat.StackExchangeScored)]
    public void Formats_are_detected_from_columns(string[] columns, DatasetFormat format) =>
        Assert.Equal(format, DatasetFormats.Detect(columns));

    [Fact]
    public void Unknown_columns_have_no_format() => Assert.Null(DatasetFormats.Detect(["a", "b"]));

    [Fact]
    public void Text_prompt_completion_and_prompt_only_rows_convert()
    {
        Assert.Equal(new TextExample("hello"), Convert("""{"text":"hello"}""") with { Source = null });
        var pc = Assert.IsType<PromptCompletionExample>(Convert("""{"prompt":"What is 2 + 2?","completion":"4"}"""));
        Assert.Equal(PromptCompletionExample.Of("What is 2 + 2?", "4"), pc with { Source = null });
        Assert.Equal("data.jsonl line 1", pc.Source.ToString());
        Assert.Equal(PromptExample.Of("Hi"), Convert("""{"prompt":"Hi","id":3}""") with { Source = null });
    }

    [Fact]
    public void Conversational_prompt_completion_and_messages_convert()
    {
        var pc = Assert.IsType<PromptCompletionExample>(Convert(
            """{"prompt":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"completion":[{"role":"assistant","content":"Hello"}]}"""));
        Assert.Equal([ChatMessage.System("Be brief."), ChatMessage.User("Hi")], pc.Prompt.Messages!);
        Assert.Equal([ChatMessage.Assistant("Hello")], pc.Completion.Messages!);
        var conv = Assert.IsType<ConversationExample>(Convert("""{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"""));
        Assert.Equal([ChatMessage.User("a"), ChatMessage.Assistant("b")], conv.Messages);
        // A plain completion next to a message prompt becomes an assistant message.
        var mixed = Assert.IsType<PromptCompletionExample>(Convert("""{"prompt":[{"role":"user","content":"Hi"}],"completion":"Yo"}"""));
        Assert.Equal([ChatMessage.Assistant("Yo")], mixed.Completion.Messages!);
    }

    [Fact]
    public void Alpaca_joins_instruction_and_input()
    {
        Assert.Equal(PromptCompletionExample.Of("Add the numbers.\n\n2 and 3", "5"),
            Convert("""{"instruction":"Add the numbers.","input":"2 and 3","output":"5"}""") with { Source = null });
        Assert.Equal(PromptCompletionExample.Of("Say hi.", "hi"),
            Convert("""{"instruction":"Say hi.","input":"","output":"hi"}""") with { Source = null });
        Assert.Equal(PromptCompletionExample.Of("Say hi.", "hi"), Convert("""{"instruction":"Say hi.","output":"hi"}""") with { Source = null });
    }

    [Fact]
    public void Preference_with_explicit_prompt_and_margin()
    {
        Assert.Equal(PreferenceExample.Of("Q", "good", "bad", 1.5),
            Convert("""{"prompt":"Q","chosen":"good","rejected":"bad","margin":1.5}""") with { Source = null });
        Assert.Equal(PreferenceExample.Of("Q", "good", "bad"), Convert("""{"prompt":"Q","chosen":"good","rejected":"bad"}""") with { Source = null });
    }

    [Fact]
    public void Implicit_prompt_of_conversational_pairs_is_the_messages_before_the_last_assistant_turn()
    {
        var p = Assert.IsType<PreferenceExample>(Convert(
            """{"chosen":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}],"rejected":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Go away."}]}"""));
        Assert.Equal([ChatMessage.User("Hi")], p.Prompt.Messages!);
        Assert.Equal([ChatMessage.Assistant("Hello!")], p.Chosen.Messages!);
        Assert.Equal([ChatMessage.Assistant("Go away.")], p.Rejected.Messages!);
        Assert.Contains("\"rejected\" does not begin with the same messages as \"chosen\"", Error(
            """{"chosen":[{"role":"user","content":"Hi"},{"role":"assistant","content":"A"}],"rejected":[{"role":"user","content":"Yo"},{"role":"assistant","content":"B"}]}"""));
    }

    [Fact]
    public void Implicit_prompt_of_text_pairs_is_the_shared_prefix_at_a_word_boundary()
    {
        var p = Assert.IsType<PreferenceExample>(Convert(
            """{"chosen":"\n\nHuman: Hi\n\nAssistant: Hello there","rejected":"\n\nHuman: Hi\n\nAssistant: Go away"}"""));
        Assert.Equal(Content.Raw("\n\nHuman: Hi\n\nAssistant:"), p.Prompt);
        Assert.Equal(Content.Raw(" Hello there"), p.Chosen);
        Assert.Equal(Content.Raw(" Go away"), p.Rejected);
        // Divergence inside a word: the whole word goes to the responses.
        var w = Assert.IsType<PreferenceExample>(Convert("""{"chosen":"I like cats","rejected":"I like cars"}"""));
        Assert.Equal(("I like", " cats", " cars"), (w.Prompt.Text, w.Chosen.Text, w.Rejected.Text));
        Assert.Equal("data.jsonl line 1: \"chosen\" and \"rejected\" share no beginning to use as the prompt; add a \"prompt\" column",
            Error("""{"chosen":"yes","rejected":"no"}"""));
        Assert.Equal("data.jsonl line 1: \"chosen\" is empty once the prompt shared with the other response is removed",
            Error("""{"chosen":"A: yes","rejected":"A: yes indeed"}"""));
    }

    [Fact]
    public void StackExchange_paired_layout_prefers_response_j()
    {
        Assert.Equal(PreferenceExample.Of("How?", "good way", "bad way"),
            Convert("""{"qid":1,"question":"How?","response_j":"good way","response_k":"bad way"}""") with { Source = null });
    }

    [Fact]
    public void StackExchange_scored_layout_reads_pm_score_or_upvotes_and_accepted()
    {
        var q = Assert.IsType<ScoredQuestionExample>(Convert(
            """{"question":"Q?","answers":[{"text":"a","pm_score":4},{"text":"b","upvotes":7,"selected":true},{"body":"c","score":-2},{"text":"d","upvotes":0,"accepted":"False"}]}"""));
        Assert.Equal([new ScoredAnswer("a", 4), new ScoredAnswer("b", 4), new ScoredAnswer("c", -1), new ScoredAnswer("d", 0)], q.Answers);
        Assert.Equal("data.jsonl line 1: field \"answers\" item 2 has no \"pm_score\" or \"upvotes\"",
            Error("""{"question":"Q?","answers":[{"text":"a","pm_score":4},{"text":"b"}]}"""));
    }

    [Fact]
    public void Column_map_renames_file_columns_before_detection()
    {
        var map = new ColumnMap(new Dictionary<string, string> { ["prompt"] = "question", ["chosen"] = "response_j", ["rejected"] = "response_k" });
        var cols = new[] { "question", "response_j", "response_k" };
        Assert.Equal(DatasetFormat.Preference, DatasetFormats.Detect(map.Expected(cols)));
        Assert.Equal(PreferenceExample.Of("Q", "j", "k"),
            Convert("""{"question":"Q","response_j":"j","response_k":"k"}""", map) with { Source = null });
        var textMap = new ColumnMap(new Dictionary<string, string> { ["text"] = "content" });
        Assert.Equal(new TextExample("x"), Convert("""{"content":"x"}""", textMap) with { Source = null });
        // Errors name the file's column and the name it stands for.
        Assert.Equal("data.jsonl line 1: field \"response_j\" (as \"chosen\") must be a string or a list of {role, content}, not a number",
            Error("""{"question":"Q","response_j":5,"response_k":"k"}""", map: map));
        var bad = new ColumnMap(new Dictionary<string, string> { ["text"] = "body" });
        Assert.Equal("data.jsonl: column map \"text\" -> \"body\": dataset data.jsonl has no column \"body\" (it has [content])",
            Assert.Throws<DatasetException>(() => DatasetFormats.Check(TrainingMethod.Sft, "data.jsonl", ["content"], bad)).Message);
    }

    [Fact]
    public void Bad_rows_name_file_line_and_column()
    {
        Assert.Equal("data.jsonl line 37: field \"chosen\" missing", ChosenMissing());
        Assert.Equal("data.jsonl line 12: \"prompt\" is null", Error("""{"prompt":null,"completion":"c"}""", 12));
        Assert.Equal("data.jsonl line 5: field \"messages\" must be a list of {role, content}, not a string", Error("""{"messages":"hi"}""", 5));
        Assert.Equal("data.jsonl line 5: field \"messages\" must be a list of {role, content} (item 2 has no \"content\" string)",
            Error("""{"messages":[{"role":"user","content":"a"},{"role":"assistant"}]}""", 5));
        Assert.Equal("data.jsonl line 5: field \"messages\" item 1 has role \"bot\": roles are system, user and assistant",
            Error("""{"messages":[{"role":"bot","content":"a"}]}""", 5));
        Assert.Equal("data.jsonl line 3: field \"text\" must be a string, not a list", Error("""{"text":[1]}""", 3));
        var issue = Assert.Throws<DatasetException>(() => Convert("""{"prompt":null,"completion":"c"}""")).Issue;
        Assert.Equal(("prompt", 1L), (issue.Column, issue.Location!.Value.Number));

        static string ChosenMissing()
        {
            // Format detected from the first row's columns; a later row without "chosen" is reported.
            var row = Row("""{"prompt":"p","rejected":"r"}""", 37);
            var ex = Assert.Throws<DatasetException>(() => DatasetFormats.Convert(row, DatasetFormat.Preference, ColumnMap.None));
            Assert.Equal("chosen", ex.Issue.Column);
            return ex.Message;
        }
    }

    [Fact]
    public void Parquet_null_is_reported_by_row()
    {
        using var dir = new DataFolder();
        var path = dir.Parquet("p.parquet", Enumerable.Range(0, 5).Select(i => new PromptCompletionRow { Prompt = i == 3 ? null : "q", Completion = "c" }), rowGroupSize: 2);
        var rows = ParquetFile.Read(path).ToList();
        var ex = Assert.Throws<DatasetException>(() => DatasetFormats.Convert(rows[3], DatasetFormat.PromptCompletion, ColumnMap.None));
        Assert.Equal("p.parquet row 3: \"prompt\" is null", ex.Message);
    }

    [Theory]
    [InlineData(TrainingMethod.Sft, DatasetFormat.Text, true)]
    [InlineData(TrainingMethod.Sft, DatasetFormat.Preference, true)]
    [InlineData(TrainingMethod.Sft, DatasetFormat.PromptOnly, false)]
    [InlineData(TrainingMethod.Reward, DatasetFormat.StackExchangeScored, true)]
    [InlineData(TrainingMethod.Dpo, DatasetFormat.PromptCompletion, false)]
    [InlineData(TrainingMethod.Ppo, DatasetFormat.PromptOnly, true)]
    [InlineData(TrainingMethod.Rloo, DatasetFormat.Alpaca, true)]
    [InlineData(TrainingMethod.Ppo, DatasetFormat.Text, false)]
    public void Methods_accept_the_formats_they_can_train_on(TrainingMethod method, DatasetFormat format, bool accepted) =>
        Assert.Equal(accepted, DatasetFormats.Accepts(method, format));

    [Fact]
    public void Wrong_columns_for_a_method_say_what_is_missing()
    {
        var ex = Assert.Throws<DatasetException>(() => DatasetFormats.Check(TrainingMethod.Sft, "/d/x.jsonl", ["a", "b"], ColumnMap.None));
        Assert.StartsWith("x.jsonl: dataset x.jsonl has columns [a, b]; SFT needs `text`, `prompt`+`completion`, `messages` or `instruction`+`output`", ex.Message);
        var dpo = Assert.Throws<DatasetException>(() => DatasetFormats.Check(TrainingMethod.Dpo, "x.jsonl", ["prompt", "completion"], ColumnMap.None));
        Assert.Equal("x.jsonl: dataset x.jsonl has columns [prompt, completion] (it looks like prompt-completion data); DPO needs preference pairs: `chosen`+`rejected` (with or without `prompt`), `question`+`response_j`+`response_k` or `question`+`answers` (StackExchange)", dpo.Message);
    }

    [Fact]
    public void Method_views_turn_formats_into_what_each_trainer_needs()
    {
        var pref = PreferenceExample.Of("Q", "good", "bad");
        Assert.Equal(PromptCompletionExample.Of("Q", "good"), DatasetFormats.ForMethod(pref, TrainingMethod.Sft, 0).Single());
        Assert.Equal(PromptExample.Of("Q"), DatasetFormats.ForMethod(pref, TrainingMethod.Ppo, 0).Single());
        var raw = new PreferenceExample(Content.Raw("H: hi\nA:"), Content.Raw(" yo"), Content.Raw(" no"));
        Assert.Equal(new TextExample("H: hi\nA: yo"), DatasetFormats.ForMethod(raw, TrainingMethod.Sft, 0).Single());
        var scored = new ScoredQuestionExample("Q", [new("meh", 1), new("best", 3), new("bad", -1)]);
        Assert.Equal(PromptCompletionExample.Of("Q", "best"), DatasetFormats.ForMethod(scored, TrainingMethod.Sft, 0).Single());
        Assert.Equal(3, DatasetFormats.ForMethod(scored, TrainingMethod.Reward, 0).Count());
        var conv = new ConversationExample([ChatMessage.User("a"), ChatMessage.Assistant("b"), ChatMessage.User("c"), ChatMessage.Assistant("d")]);
        var prompt = Assert.IsType<PromptExample>(DatasetFormats.ForMethod(conv, TrainingMethod.Rloo, 0).Single());
        Assert.Equal(3, prompt.Prompt.Messages!.Count);
        Assert.Throws<DatasetException>(() => DatasetFormats.ForMethod(new TextExample("t"), TrainingMethod.Dpo, 0).ToList());
    }
}
