using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Trainers;

public class SftDataTests
{
    private const int Eos = 99;

    [Fact]
    public void Packing_puts_eos_between_texts_and_cuts_blocks_of_exactly_max_length_without_padding()
    {
        int[][] texts = [[1, 2, Eos], [3, 4], [5, 6, 7, Eos]];   // the second has no EOS of its own: one is inserted
        var blocks = SftData.Pack(texts, blockLength: 4, Eos);
        Assert.Equal([[1, 2, Eos, 3], [4, Eos, 5, 6]], blocks.Select(b => b.Ids));
        Assert.All(blocks, b => Assert.All(b.Trained, Assert.True));
        // Training drops the partial tail [7, EOS]; evaluation keeps it.
        var eval = SftData.Pack(texts, blockLength: 4, Eos, keepPartial: true);
        Assert.Equal([7, Eos], eval[^1].Ids);

        var batch = SftBatch.Collate(blocks, padId: Eos, CPU);
        Assert.Null(batch.Data.AttentionMask);             // equal lengths: no padding at all
        Assert.Equal(2 * 3, batch.Items);                   // every position after the first carries a label
        Assert.Equal([2, 4], batch.Data.InputIds.shape);
    }

    [Fact]
    public void Completion_only_labels_mask_the_prompt_and_train_the_eos_even_when_pad_is_eos()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        Assert.True(tokenizer.PadIsEos);
        int eos = tokenizer.EosId!.Value;
        Example[] examples = [PromptCompletionExample.Of("What is 2 + 3?", "5"), PromptCompletionExample.Of("What is 12 + 30?", "42")];
        var (sequences, stats) = SftData.TokenizeAll(examples, tokenizer, PromptTemplates.StackLlama, maxLength: 64, completionOnly: true);
        Assert.Equal(0, stats.Truncated);
        var mb = SftBatch.Collate(sequences, tokenizer.PadId!.Value, CPU);
        var ids = mb.Data.InputIds;
        var targets = mb.Data.Targets;
        Assert.NotNull(mb.Data.AttentionMask);              // the first row is shorter: right padding

        for (int r = 0; r < 2; r++)
        {
            var seq = sequences[r];
            int promptLength = seq.Trained.ToList().IndexOf(true);
            var rowTargets = targets[r].data<long>().ToArray();
            // Labels sit one position left of their token: prompt tokens have none.
            for (int t = 1; t < promptLength; t++) Assert.Equal(SftBatch.IgnoreIndex, rowTargets[t - 1]);
            // The completion, digit by digit, then the EOS that ends it is a label...
            var answer = tokenizer.Decode(seq.Ids[promptLength..^1]);
            Assert.Equal(r == 0 ? "5" : "42", answer);
            Assert.Equal(eos, seq.Ids[^1]);
            Assert.Equal(eos, rowTargets[seq.Ids.Length - 2]);
            // ...while padding after it, the same id, is not.
            for (int t = seq.Ids.Length; t < ids.shape[1]; t++)
            {
                Assert.Equal(eos, ids[r, t].item<long>());
                Assert.Equal(SftBatch.IgnoreIndex, rowTargets[t - 1]);
            }
        }
        Assert.Equal(sequences.Sum(s => s.Trained.Skip(1).Count(t => t)), mb.Items);
        Assert.Equal(2 + 1 + 1 + 1, mb.Items);              // "5" EOS and "4" "2" EOS
    }

    [Fact]
    public void Text_data_and_switching_completion_only_off_train_every_token()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        var (text, _) = SftData.TokenizeAll([new TextExample("hello there")], tokenizer, PromptTemplates.StackLlama, 64, completionOnly: true);
        Assert.All(text[0].Trained, Assert.True);
        Assert.Equal(tokenizer.EosId, text[0].Ids[^1]);
        var (all, _) = SftData.TokenizeAll([PromptCompletionExample.Of("What is 1 + 1?", "2")], tokenizer, PromptTemplates.StackLlama, 64, completionOnly: false);
        Assert.All(all[0].Trained, Assert.True);
    }

    [Fact]
    public void Long_sequences_are_truncated_and_counted_and_ones_left_without_a_completion_token_are_dropped()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        Example[] examples =
        [
            PromptCompletionExample.Of("What is 1 + 1?", "2"),
            PromptCompletionExample.Of("What is 1 + 1?", "2 and then a long ramble that does not fit"),
            PromptCompletionExample.Of(new string('x', 200), "2"),
        ];
        int promptLength = PromptTemplates.StackLlama.Tokenize(tokenizer, "What is 1 + 1?", "2").PromptLength;
        var (sequences, stats) = SftData.TokenizeAll(examples, tokenizer, PromptTemplates.StackLlama, maxLength: promptLength + 3, completionOnly: true);
        Assert.Equal(3, stats.Examples);
        Assert.Equal(2, stats.Truncated);
        Assert.Equal(1, stats.DroppedEmpty);
        Assert.Equal(2, sequences.Count);
        Assert.Equal(promptLength + 3, sequences[1].Ids.Length);
    }
}
