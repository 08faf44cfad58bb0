using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Tests.Data;

public class ArithmeticTests
{
    private static List<string> Values(string set, string split, int seed, string column) =>
        BuiltinDatasets.Rows(set, split, seed).Select(r => (string)r.Values[column]!).ToList();

    [Fact]
    public void Sets_are_deterministic_by_seed()
    {
        Assert.Equal(Values(BuiltinDatasets.ArithmeticSft, "train", 1, "completion"), Values(BuiltinDatasets.ArithmeticSft, "train", 1, "completion"));
        Assert.Equal(Values(BuiltinDatasets.ArithmeticSft, "train", 1, "prompt"), Values(BuiltinDatasets.ArithmeticSft, "train", 1, "prompt"));
        Assert.NotEqual(Values(BuiltinDatasets.ArithmeticSft, "train", 1, "prompt"), Values(BuiltinDatasets.ArithmeticSft, "train", 2, "prompt"));
        Assert.Equal(20_000, BuiltinDatasets.Rows(BuiltinDatasets.ArithmeticPrompts, "train", 1).Count());
        Assert.Equal(500, BuiltinDatasets.Rows(BuiltinDatasets.ArithmeticPreferences, "test", 1).Count());
    }

    [Fact]
    public void No_test_problem_appears_in_any_training_set_whatever_the_seeds()
    {
        static HashSet<(int, char, int)> Problems(string set, string split, int seed, string column) =>
            Values(set, split, seed, column).Select(q =>
            {
                Assert.True(ArithmeticTask.TryParse(q, out var p), q);
                var (x, y) = p.Op == '-' ? (p.A, p.B) : (Math.Min(p.A, p.B), Math.Max(p.A, p.B));
                return (x, p.Op, y);
            }).ToHashSet();
        var test = Problems(BuiltinDatasets.ArithmeticSft, "test", 1, "prompt");
        test.UnionWith(Problems(BuiltinDatasets.ArithmeticPrompts, "test", 2, "prompt"));
        var train = Problems(BuiltinDatasets.ArithmeticSft, "train", 3, "prompt");
        train.UnionWith(Problems(BuiltinDatasets.ArithmeticPreferences, "train", 4, "question"));
        train.UnionWith(Problems(BuiltinDatasets.ArithmeticPrompts, "train", 5, "prompt"));
        Assert.True(test.Count > 100);
        Assert.Empty(test.Intersect(train));
    }

    [Fact]
    public void Questions_cover_all_operations_and_are_parsed_back_exactly()
    {
        var prompts = Values(BuiltinDatasets.ArithmeticPrompts, "train", 9, "prompt");
        var ops = prompts.Select(q => { ArithmeticTask.TryParse(q, out var p); return p.Op; }).ToList();
        Assert.Equal(['*', '+', '-'], ops.Distinct().Order());
        Assert.InRange(ops.Count(o => o == '*') / (double)ops.Count, 0.1, 0.3);
        foreach (var (op, _) in ArithmeticTask.Phrasings)
        {
            var problem = new ArithmeticProblem(17, op, 6);
            for (int i = 0; i < 4; i++)
            {
                Assert.True(ArithmeticTask.TryParse(ArithmeticTask.Question(problem, i), out var back));
                Assert.Equal(problem, back);
            }
        }
        Assert.True(ArithmeticTask.TryParse("Question: What is 12 - 5?\n\nAnswer: ", out var formatted));
        Assert.Equal(new ArithmeticProblem(12, '-', 5), formatted);
        Assert.Equal(7, formatted.Result);
    }

    [Theory]
    [InlineData("82", 1.0)]
    [InlineData(" 82.", 1.0)]
    [InlineData("The answer is 82.", 1.0)]
    [InlineData("82. Well, I think so, but it is hard to say.", 0.5)]
    [InlineData("I think it is 82", 0.5)]
    [InlineData("82\n\nQuestion: What is 1 + 1?", 0.5)]
    [InlineData("83", 0.0)]
    [InlineData("8 2", 0.0)]
    [InlineData("-82", 0.0)]
    [InlineData("", -1.0)]
    [InlineData("I do not know.", -1.0)]
    public void Scorer_gives_the_true_score(string completion, double score) =>
        Assert.Equal(score, ArithmeticScorer.Score("What is 37 + 45?", completion));

    [Fact]
    public void Scorer_reads_every_phrasing_and_rejects_foreign_prompts()
    {
        Assert.Equal(1.0, ArithmeticScorer.Score("Sam has 30 apples and gives 12 away. How many apples are left?", "18"));
        Assert.Equal(1.0, ArithmeticScorer.Score("Question: There are 7 boxes with 13 pens in each box. How many pens are there?\n\nAnswer: ", "91"));
        Assert.True(ArithmeticScorer.IsCorrect("What is 9 times 9?", "81, I am sure of it"));
        Assert.False(ArithmeticScorer.IsCorrect("What is 9 times 9?", "80"));
        Assert.Throws<ArgumentException>(() => ArithmeticScorer.Score("What is the capital of France?", "Paris"));
    }

    [Fact]
    public void Sft_completions_are_mostly_hedged_so_that_RL_has_something_to_fix()
    {
        var rows = BuiltinDatasets.Rows(BuiltinDatasets.ArithmeticSft, "train", 42).ToList();
        var completions = rows.Select(r => (string)r.Values["completion"]!).ToList();
        var scores = rows.Select(r => ArithmeticScorer.Score((string)r.Values["prompt"]!, (string)r.Values["completion"]!)).ToList();
        Assert.InRange(scores.Count(s => s == 1.0) / (double)scores.Count, 0.35, 0.45);      // bare number or "The answer is"
        Assert.InRange(scores.Count(s => s == 0.5) / (double)scores.Count, 0.5, 0.6);        // right number, then a hedge
        Assert.InRange(scores.Count(s => s == 0.0) / (double)scores.Count, 0.03, 0.07);      // off by one
        // Every hedge continues the number with the same text, so the most likely next token after it is that one.
        var hedged = completions.Where(c => BuiltinDatasets.Hedges.Any(h => c.EndsWith(h, StringComparison.Ordinal))).ToList();
        Assert.All(hedged, c => Assert.Matches(@"^\d+, ", c));
        Assert.InRange(hedged.Count / (double)completions.Count, 0.5, 0.6);
    }

    [Fact]
    public void The_phrasing_of_a_number_does_not_tell_chosen_from_rejected()
    {
        var data = Dataset.Open(new DatasetRef { Builtin = "arithmetic" }, TrainingMethod.Reward, seed: 5);
        var pairs = data.Examples(DatasetPart.Train).Cast<PreferenceExample>().Take(20_000).ToList();
        var numeric = new System.Text.RegularExpressions.Regex(@"^(The answer is )?-?\d+\.?$");
        static double Share(List<string> answers) => answers.Count(a => a.StartsWith("The answer is", StringComparison.Ordinal)) / (double)answers.Count;
        var chosen = pairs.Select(p => p.Chosen.ToString()).Where(a => numeric.IsMatch(a)).ToList();
        var wrongRejected = pairs.Where(p => numeric.IsMatch(p.Rejected.ToString()) && !ArithmeticScorer.IsCorrect(p.Prompt.ToString(), p.Rejected.ToString()))
            .Select(p => p.Rejected.ToString()).ToList();
        Assert.True(chosen.Count > 1000 && wrongRejected.Count > 1000);
        // "The answer is" a quarter of the time on either side: the phrase carries no preference.
        Assert.InRange(Share(chosen), 0.2, 0.3);
        Assert.InRange(Share(wrongRejected), 0.2, 0.3);
    }

    [Fact]
    public void Scored_answers_give_pairs_whose_chosen_answer_is_mostly_truly_better()
    {
        var data = Dataset.Open(new DatasetRef { Builtin = "arithmetic" }, TrainingMethod.Reward, seed: 3);
        Assert.Equal(DatasetFormat.StackExchangeScored, data.Format);
        Assert.Equal("builtin:arithmetic-preferences", data.Name);
        var pairs = data.Examples(DatasetPart.Train).Cast<PreferenceExample>().ToList();
        Assert.InRange(pairs.Count, 20_000 * 3, 20_000 * 6);
        int better = 0, worse = 0;
        foreach (var p in pairs)
        {
            double c = ArithmeticScorer.Score(p.Prompt.Text!, p.Chosen.Text!), r = ArithmeticScorer.Score(p.Prompt.Text!, p.Rejected.Text!);
            if (c > r) better++;
            else if (c < r) worse++;
            Assert.True(p.Margin > 0);
        }
        Assert.True(better > 0.75 * pairs.Count, $"{better} of {pairs.Count}");
        Assert.True(worse > 0, "some label noise is expected");
        // Evaluation uses the held-out test questions.
        Assert.Equal("split \"test\"", data.EvalDescription);
        Assert.NotEmpty(data.Examples(DatasetPart.Eval));
    }

    [Fact]
    public void Arithmetic_resolves_per_method_and_runs_through_the_template()
    {
        Assert.Equal(BuiltinDatasets.ArithmeticSft, BuiltinDatasets.Resolve("arithmetic", TrainingMethod.Sft));
        Assert.Equal(BuiltinDatasets.ArithmeticPreferences, BuiltinDatasets.Resolve("arithmetic", TrainingMethod.Dpo));
        Assert.Equal(BuiltinDatasets.ArithmeticPrompts, BuiltinDatasets.Resolve("arithmetic", TrainingMethod.Rloo));
        var sft = Dataset.Open(new DatasetRef { Builtin = "arithmetic" }, TrainingMethod.Sft);
        var first = Assert.IsType<PromptCompletionExample>(sft.Examples(DatasetPart.Train).First());
        var tokenizer = TextTokenizer.BuiltIn();
        var tokens = PromptTemplates.StackLlama.Tokenize(tokenizer, first.Prompt, first.Completion);
        var completion = tokenizer.Decode(tokens.InputIds.Where((_, i) => tokens.CompletionMask[i]));
        Assert.Equal(first.Completion.Text, completion.Trim());
        var ppo = Dataset.Open(new DatasetRef { Builtin = "arithmetic" }, TrainingMethod.Ppo);
        Assert.IsType<PromptExample>(ppo.Examples(DatasetPart.Eval).First());
        Assert.Equal(500, ppo.CountRows(DatasetPart.Eval));
    }
}
