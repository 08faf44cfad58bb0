// SFT data as TRL's SFTTrainer prepares it, tokenised once up front and kept in memory as int arrays:
//
//   text                 text + EOS, every token trained
//   prompt + completion  the template's formatting + EOS; with completion-only loss the prompt tokens get no labels
//   messages             the template's conversation format; with completion-only loss only assistant turns train
//                        (TRL keys this on assistant_only_loss, off by default; we use the one flag for both)
//
// Padded mode: sequences longer than maxLength are truncated at the end (the count is reported); a sequence left
// with no trained token (a prompt longer than maxLength) is dropped, as it could teach nothing.
// Packing mode (TRL's classic ConstantLengthDataset): whole sequences, each ending with EOS, are concatenated and cut
// into blocks of exactly maxLength; every token is trained, there is no padding, and the last partial block of the
// training set is dropped. Attention crosses document boundaries inside a block, as in classic packing (simpler, and
// the EOS between documents tells the model where one ends); positions run 0..maxLength-1 per block.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Trainers;

/// <summary>One training sequence: token ids and which positions carry a label (trained).</summary>
public sealed record SftSequence(int[] Ids, bool[] Trained)
{
    public int TrainedCount => Trained.Count(t => t);

    public static SftSequence AllTrained(int[] ids) => new(ids, Enumerable.Repeat(true, ids.Length).ToArray());
}

/// <summary>What tokenising a part of the data did.</summary>
public sealed record SftTokenizeStats(int Examples, long Tokens, int Truncated, int DroppedEmpty);

public static class SftData
{
    /// <summary>Ids and completion mask of one SFT example through <paramref name="template"/> (EOS appended and marked).</summary>
    public static TokenizedExample Tokenize(Example example, TextTokenizer tokenizer, PromptTemplate template) => example switch
    {
        TextExample t => ExampleTemplates.TokenizeText(tokenizer, t.Text),
        PromptCompletionExample pc => template.Tokenize(tokenizer, pc.Prompt, pc.Completion),
        ConversationExample c => template.TokenizeConversation(tokenizer, c.Messages),
        _ => throw new ArgumentException($"{example.GetType().Name} is not an SFT example", nameof(example)),
    };

    /// <summary>Tokenises every example. With <paramref name="maxLength"/> set, truncates and drops sequences that end
    /// up with no trained token; <paramref name="completionOnly"/> false trains every token.
    /// <paramref name="progress"/> gets the number of examples done, every so often.</summary>
    public static (List<SftSequence> Sequences, SftTokenizeStats Stats) TokenizeAll(IEnumerable<Example> examples, TextTokenizer tokenizer,
        PromptTemplate template, int? maxLength, bool completionOnly, Action<int>? progress = null)
    {
        var sequences = new List<SftSequence>();
        int count = 0, truncated = 0, dropped = 0;
        long tokens = 0;
        foreach (var example in examples)
        {
            var tokenized = Tokenize(example, tokenizer, template);
            var ids = tokenized.InputIds.ToArray();
            var trained = completionOnly ? tokenized.CompletionMask.ToArray() : Enumerable.Repeat(true, ids.Length).ToArray();
            if (maxLength is int max && ids.Length > max)
            {
                ids = ids[..max];
                trained = trained[..max];
                truncated++;
            }
            count++;
            // The first token never has a label (nothing precedes it), so a sequence needs a trained token after it.
            if (maxLength is not null && !trained.Skip(1).Any(t => t)) dropped++;
            else
            {
                sequences.Add(new SftSequence(ids, trained));
                tokens += ids.Length;
            }
            if (count % 500 == 0) progress?.Invoke(count);
        }
        progress?.Invoke(count);
        return (sequences, new SftTokenizeStats(count, tokens, truncated, dropped));
    }

    /// <summary>Concatenates the sequences, with <paramref name="eos"/> after each one that does not already end with it,
    /// and cuts the stream into blocks of <paramref name="blockLength"/>, every token trained. The last, shorter block is
    /// kept only when <paramref name="keepPartial"/> (evaluation: small eval sets still give a block).</summary>
    public static List<SftSequence> Pack(IEnumerable<int[]> sequences, int blockLength, int eos, bool keepPartial = false)
    {
        if (blockLength < 2) throw new ArgumentOutOfRangeException(nameof(blockLength), blockLength, "a block needs at least 2 tokens");
        var blocks = new List<SftSequence>();
        var current = new List<int>(blockLength);
        foreach (var ids in sequences)
        {
            if (ids.Length == 0) continue;
            bool endsWithEos = ids[^1] == eos;
            for (int i = 0; i < ids.Length + (endsWithEos ? 0 : 1); i++)
            {
                current.Add(i < ids.Length ? ids[i] : eos);
                if (current.Count == blockLength)
                {
                    blocks.Add(SftSequence.AllTrained([.. current]));
                    current.Clear();
                }
            }
        }
        if (keepPartial && current.Count >= 2) blocks.Add(SftSequence.AllTrained([.. current]));
        return blocks;
    }
}
