// Preference pairs from StackExchange questions with several scored answers, as in the StackLLaMA data
// (HuggingFaceH4/stack-exchange-preferences, lvwerra/stack-exchange-paired). The dataset card's rule:
// "score = log2(1 + upvotes) rounded to the nearest integer, plus 1 if the questioner accepted the
// answer (we assign a score of -1 if the number of upvotes is negative)". Pairs join answers of
// different scores, the better-scored one chosen, at most ten per question.
namespace RlhfStudio.Engine.Data;

public static class StackExchangePairs
{
    public const int MaxPairsPerQuestion = 10;

    /// <summary>The preference score of an answer. Negative upvotes give -1 whether or not the answer was
    /// accepted. log2(1 + u) is never exactly halfway between integers for an integer u &gt; 0, so the
    /// rounding mode does not matter.</summary>
    public static int Score(long upvotes, bool accepted)
    {
        if (upvotes < 0) return -1;
        return (int)Math.Round(Math.Log2(1.0 + upvotes)) + (accepted ? 1 : 0);
    }

    /// <summary>Index pairs (chosen, rejected) over answers with these scores: every pair of different scores,
    /// the higher-scored answer chosen; when there are more than <paramref name="maxPairs"/>, a sample of
    /// them drawn with <paramref name="rng"/>, kept in the order of the full list.</summary>
    public static IReadOnlyList<(int Chosen, int Rejected)> Pairs(IReadOnlyList<int> scores, Random rng, int maxPairs = MaxPairsPerQuestion)
    {
        var pairs = new List<(int, int)>();
        for (int i = 0; i < scores.Count; i++)
            for (int j = i + 1; j < scores.Count; j++)
                if (scores[i] != scores[j])
                    pairs.Add(scores[i] > scores[j] ? (i, j) : (j, i));
        if (pairs.Count <= maxPairs) return pairs;
        // Partial Fisher-Yates over positions, then restore the original order of the chosen positions.
        var positions = Enumerable.Range(0, pairs.Count).ToArray();
        for (int k = 0; k < maxPairs; k++)
        {
            int swap = k + rng.Next(positions.Length - k);
            (positions[k], positions[swap]) = (positions[swap], positions[k]);
        }
        return positions.Take(maxPairs).Order().Select(p => pairs[p]).ToList();
    }

    /// <summary>The preference pairs of one question. The sample (when there are more than ten pairs) depends only
    /// on <paramref name="seed"/> and the question text, so it is the same on every run and in any row order.
    /// The margin is the score difference.</summary>
    public static IReadOnlyList<PreferenceExample> Build(ScoredQuestionExample question, int seed, int maxPairs = MaxPairsPerQuestion)
    {
        var rng = new Random((int)(StableHash.Mix(StableHash.Of(question.Question) ^ (ulong)(uint)seed) & 0x7FFF_FFFF));
        var scores = question.Answers.Select(a => a.Score).ToList();
        return Pairs(scores, rng, maxPairs)
            .Select(p => new PreferenceExample(
                Content.Plain(question.Question),
                Content.Plain(question.Answers[p.Chosen].Text),
                Content.Plain(question.Answers[p.Rejected].Text),
                scores[p.Chosen] - scores[p.Rejected]) { Source = question.Source })
            .ToList();
    }
}

/// <summary>Hashes that are the same in every process (string.GetHashCode is randomised per process).</summary>
internal static class StableHash
{
    /// <summary>SplitMix64's finaliser: a well-mixed 64-bit function of a 64-bit value.</summary>
    public static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB;
        return x ^ (x >> 31);
    }

    /// <summary>FNV-1a over the UTF-16 code units, then mixed.</summary>
    public static ulong Of(string text)
    {
        ulong h = 0xCBF29CE484222325;
        foreach (var c in text) h = (h ^ c) * 0x100000001B3;
        return Mix(h);
    }
}
