// The prompts of an RL run: the dataset's prompts, formatted with the prompt template and tokenised once.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>One prompt: its text as the dataset gives it (what a built-in scorer reads) and its token ids after the template.</summary>
public sealed record RlPrompt(string Text, IReadOnlyList<int> Ids);

public sealed class PromptSet
{
    private PromptSet(IReadOnlyList<RlPrompt> prompts, int skipped)
    {
        Prompts = prompts;
        Skipped = skipped;
    }

    public IReadOnlyList<RlPrompt> Prompts { get; }
    /// <summary>Prompts left out because they were longer than the room left for the response.</summary>
    public int Skipped { get; }
    public int Count => Prompts.Count;
    public RlPrompt this[int index] => Prompts[index];

    /// <summary>Reads the prompts of <paramref name="part"/>, keeping those of at most <paramref name="maxPromptTokens"/>
    /// tokens (TRL's examples filter long prompts the same way, rather than cutting questions).</summary>
    public static PromptSet Load(RunSpec spec, TextTokenizer tokenizer, PromptTemplate template, int maxPromptTokens, DatasetPart part = DatasetPart.Train)
    {
        var data = Dataset.Open(spec.Dataset, spec.Method, spec.Seed);
        var list = new List<RlPrompt>();
        int skipped = 0;
        foreach (var example in data.Examples(part))
        {
            if (example is not PromptExample p) continue;
            var ids = template.TokenizePrompt(tokenizer, p.Prompt);
            if (ids.Count == 0 || ids.Count > maxPromptTokens)
            {
                skipped++;
                continue;
            }
            list.Add(new RlPrompt(p.Prompt.ToString(), ids));
        }
        return new PromptSet(list, skipped);
    }

    /// <summary>A prompt set from given prompts (tests, sample prompts).</summary>
    public static PromptSet Of(IEnumerable<RlPrompt> prompts) => new(prompts.ToList(), 0);
}
