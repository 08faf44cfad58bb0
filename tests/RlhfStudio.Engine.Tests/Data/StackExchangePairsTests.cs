using RlhfStudio.Engine.Data;

namespace RlhfStudio.Engine.Tests.Data;

public class StackExchangePairsTests
{
    [Theory]
    [InlineData(0, false, 0)]    // log2(1) = 0
    [InlineData(1, false, 1)]    // log2(2) = 1
    [InlineData(2, false, 2)]    // log2(3) = 1.58 -> 2
    [InlineData(4, false, 2)]    // log2(5) = 2.32 -> 2
    [InlineData(5, false, 3)]    // log2(6) = 2.58 -> 3
    [InlineData(10, true, 4)]    // log2(11) = 3.46 -> 3, +1 accepted
    [InlineData(22, false, 5)]   // log2(23) = 4.52 -> 5
    [InlineData(0, true, 1)]
    [InlineData(-1, false, -1)]  // negative upvotes: -1
    [InlineData(-7, true, -1)]   // ... even when accepted
    public void Score_follows_the_dataset_card(long upvotes, bool accepted, int score) =>
        Assert.Equal(score, StackExchangePairs.Score(upvotes, accepted));

    [Fact]
    public void Pairs_join_different_scores_with_the_better_answer_chosen()
    {
        var pairs = StackExchangePairs.Pairs([2, 5, 2, -1], new Random(0));
        // (0,1) -> 1 over 0; (0,2) tie skipped; (0,3) -> 0 over 3; (1,2) -> 1 over 2; (1,3); (2,3)
        Assert.Equal([(1, 0), (0, 3), (1, 2), (1, 3), (2, 3)], pairs);
        Assert.Empty(StackExchangePairs.Pairs([3, 3, 3], new Random(0)));
        Assert.Empty(StackExchangePairs.Pairs([3], new Random(0)));
    }

    [Fact]
    public void More_than_ten_pairs_are_sampled_deterministically()
    {
        int[] scores = [0, 1, 2, 3, 4, 5, 6];   // 21 pairs
        var a = StackExchangePairs.Pairs(scores, new Random(7));
        var b = StackExchangePairs.Pairs(scores, new Random(7));
        var c = StackExchangePairs.Pairs(scores, new Random(8));
        Assert.Equal(10, a.Count);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(10, a.Distinct().Count());
        Assert.All(a, p => Assert.True(scores[p.Chosen] > scores[p.Rejected]));
    }

    [Fact]
    public void Build_makes_preference_examples_with_score_margins_seeded_by_question()
    {
        var q = new ScoredQuestionExample("Q?", [new("ok", 1), new("great", 4), new("bad", -1)]);
        var pairs = StackExchangePairs.Build(q, seed: 1);
        Assert.Equal(
        [
            PreferenceExample.Of("Q?", "great", "ok", 3),
            PreferenceExample.Of("Q?", "ok", "bad", 2),
            PreferenceExample.Of("Q?", "great", "bad", 5),
        ], pairs);
        var many = new ScoredQuestionExample("Many?", Enumerable.Range(0, 8).Select(i => new ScoredAnswer($"a{i}", i)).ToList());
        Assert.Equal(StackExchangePairs.Build(many, 3), StackExchangePairs.Build(many, 3));
        Assert.Equal(10, StackExchangePairs.Build(many, 3).Count);
        Assert.NotEqual(StackExchangePairs.Build(many, 3), StackExchangePairs.Build(many, 4));
    }
}
