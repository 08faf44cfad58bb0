// Preference pairs for DPO, tokenised once (TRL DPOTrainer.tokenize_row): each side is prompt + completion + EOS
// through the template, the completion (with its EOS) marked. Truncation as TRL with truncation_mode "keep_end" for
// the prompt: a prompt longer than maxPromptLength loses its BEGINNING (the question's end and the "Answer:" cue stay
// next to the completion); then a side longer than maxLength loses the END of its completion. maxPromptLength <
// maxLength (checked by the spec), so every side keeps at least one completion token.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Trainers.Dpo;

/// <summary>One side of a pair: token ids and which of them are completion (their log-probabilities count).</summary>
public sealed record DpoSequence(int[] Ids, bool[] Completion)
{
    public int CompletionTokens => Completion.Count(c => c);
}

/// <summary>A tokenised preference pair.</summary>
public sealed record DpoPair(DpoSequence Chosen, DpoSequence Rejected);

public sealed record DpoTokenizeStats(int Pairs, int PromptTruncated, int CompletionTruncated, int DroppedIdentical);

public static class DpoData
{
    /// <summary>Both sides of <paramref name="example"/>; <paramref name="promptCut"/> / <paramref name="completionCut"/>
    /// say whether either side lost prompt or completion tokens.</summary>
    public static DpoPair Tokenize(PreferenceExample example, TextTokenizer tokenizer, PromptTemplate template, int maxPromptLength, int maxLength,
        out bool promptCut, out bool completionCut)
    {
        var chosen = Side(template.Tokenize(tokenizer, example.Prompt, example.Chosen), maxPromptLength, maxLength, out bool p1, out bool c1);
        var rejected = Side(template.Tokenize(tokenizer, example.Prompt, example.Rejected), maxPromptLength, maxLength, out bool p2, out bool c2);
        promptCut = p1 || p2;
        completionCut = c1 || c2;
        return new DpoPair(chosen, rejected);
    }

    /// <summary>One side, truncated: leading prompt tokens beyond <paramref name="maxPromptLength"/> dropped, then the
    /// whole cut to <paramref name="maxLength"/> from the end.</summary>
    public static DpoSequence Side(TokenizedExample tokens, int maxPromptLength, int maxLength, out bool promptCut, out bool completionCut)
    {
        if (maxPromptLength < 1 || maxPromptLength >= maxLength)
            throw new ArgumentOutOfRangeException(nameof(maxPromptLength), $"must be at least 1 and below maxLength ({maxLength})");
        var ids = tokens.InputIds.ToArray();
        var mask = tokens.CompletionMask.ToArray();
        int prompt = tokens.PromptLength;
        if (prompt == ids.Length) throw new ArgumentException("the example has no completion token", nameof(tokens));
        int drop = Math.Max(0, prompt - maxPromptLength);
        promptCut = drop > 0;
        int keep = Math.Min(ids.Length - drop, maxLength);
        completionCut = keep < ids.Length - drop;
        return new DpoSequence(ids[drop..(drop + keep)], mask[drop..(drop + keep)]);
    }

    /// <summary>Tokenises every pair; pairs whose sides are identical once cut (nothing to prefer) are dropped and counted.
    /// <paramref name="progress"/> gets the number of examples done, every so often.</summary>
    public static (List<(PreferenceExample Example, DpoPair Pair)> Pairs, DpoTokenizeStats Stats) TokenizeAll(IEnumerable<Example> examples,
        TextTokenizer tokenizer, PromptTemplate template, int maxPromptLength, int maxLength, Action<int>? progress = null)
    {
        var pairs = new List<(PreferenceExample, DpoPair)>();
        int count = 0, promptCut = 0, completionCut = 0, identical = 0;
        foreach (var example in examples)
        {
            var preference = example as PreferenceExample
                ?? throw new ArgumentException($"{example.GetType().Name} is not a preference pair", nameof(examples));
            var pair = Tokenize(preference, tokenizer, template, maxPromptLength, maxLength, out bool p, out bool c);
            count++;
            if (p) promptCut++;
            if (c) completionCut++;
            if (pair.Chosen.Ids.AsSpan().SequenceEqual(pair.Rejected.Ids)) identical++;
            else pairs.Add((preference, pair));
            if (count % 500 == 0) progress?.Invoke(count);
        }
        progress?.Invoke(count);
        return (pairs, new DpoTokenizeStats(count, promptCut, completionCut, identical));
    }
}
