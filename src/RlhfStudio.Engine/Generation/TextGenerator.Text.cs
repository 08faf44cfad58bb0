using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Generation;

public static partial class TextGenerator
{
    /// <summary>Generates a completion for each prompt text and decodes it without special tokens.
    /// With <paramref name="template"/>, each prompt is formatted as a user turn (BOS as the tokenizer expects);
    /// without, the text is encoded as given (plus BOS when the tokenizer adds one by default).
    /// EOS ids: <see cref="GenerationSettings.EosTokenIds"/>, else the model config's plus the tokenizer's.</summary>
    public static IReadOnlyList<string> GenerateText(CausalLanguageModel model, TextTokenizer tokenizer, IReadOnlyList<string> prompts,
        GenerationSettings settings, PromptTemplate? template = null, Action<GenerationStep>? onStep = null, CancellationToken cancel = default)
    {
        var encoded = prompts.Select(p => template is null ? tokenizer.Encode(p, addBos: tokenizer.AddBosByDefault) : template.TokenizePrompt(tokenizer, p)).ToList();
        return GenerateText(model, tokenizer, encoded, settings, onStep, cancel);
    }

    /// <summary>As above from token ids: generates for each prompt and returns the decoded completions.</summary>
    public static IReadOnlyList<string> GenerateText(CausalLanguageModel model, TextTokenizer tokenizer, IReadOnlyList<IReadOnlyList<int>> promptIds,
        GenerationSettings settings, Action<GenerationStep>? onStep = null, CancellationToken cancel = default)
    {
        settings = WithTokenizerDefaults(model, tokenizer, settings);
        var (ids, mask) = PromptBatch.LeftPad(promptIds, settings.PadTokenId!.Value, model.Device);
        using (ids)
        using (mask)
        using (var result = Generate(model, ids, mask, settings, onStep, tokenizer, cancel))
            return result.Tokens.Select(t => tokenizer.Decode(t.Select(x => (int)x), skipSpecialTokens: true)).ToList();
    }

    /// <summary>Fills EOS and pad from the model config and the tokenizer where the settings leave them open.</summary>
    public static GenerationSettings WithTokenizerDefaults(CausalLanguageModel model, TextTokenizer tokenizer, GenerationSettings settings)
    {
        var eos = settings.EosTokenIds ?? model.Config.EosTokenIds.Concat(tokenizer.EosId is int e ? [e] : []).Distinct().ToList();
        long pad = settings.PadTokenId ?? tokenizer.PadId ?? model.Config.PadTokenId ?? (eos.Count > 0 ? eos[0] : 0);
        return settings with { EosTokenIds = eos, PadTokenId = pad };
    }
}
