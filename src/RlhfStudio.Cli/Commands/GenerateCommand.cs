using System.Diagnostics;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Cli.Commands;

/// <summary><c>generate DIR --prompt "..."</c>: streams the completion to stdout as tokens arrive; a one-line summary
/// (tokens, speed, why it stopped) goes to stderr so stdout holds only the text.</summary>
internal static class GenerateCommand
{
    public static CommandSpec Spec { get; } = new("generate", ["DIR"],
        ["prompt", "max-new-tokens", "min-new-tokens", "temperature", "top-k", "top-p", "seed", "template", "system", "stop", "dtype"], [],
        "complete one prompt, streaming tokens as they come (temperature 0 = greedy; --template none sends the prompt as is)",
        Run);

    private static int Run(Arguments args, CliOutput output)
    {
        var folder = CommandHelpers.ModelFolder(args.Positional(0));
        var prompt = args.String("prompt") ?? throw new UsageException("--prompt is required");
        var settings = new GenerationSettings
        {
            MaxNewTokens = args.Int("max-new-tokens", 128, min: 1),
            MinNewTokens = args.Int("min-new-tokens", 0, min: 0),
            Temperature = args.Double("temperature", 1.0),
            TopK = args.Int("top-k", 0, min: 0),
            TopP = args.Double("top-p", 1.0),
            Seed = args.Long("seed", 0),
            StopStrings = args.String("stop") is { } stop ? [stop] : [],
        };
        try { settings.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        var dtype = CommandHelpers.DType(args);
        var tokenizer = TextTokenizer.Load(folder);
        using var model = ModelLoader.Load(folder, dtype);
        var templateName = args.String("template");
        PromptTemplate? template = templateName switch
        {
            null => PromptTemplates.DefaultFor(tokenizer, model.Config.ModelType),
            "none" => null,
            _ => PromptTemplates.All.FirstOrDefault(t => t.Name == templateName)
                 ?? throw new UsageException($"unknown template \"{templateName}\" (templates: none, {string.Join(", ", PromptTemplateNames.All)})"),
        };
        var ids = template is null ? tokenizer.Encode(prompt, addBos: tokenizer.AddBosByDefault) : template.TokenizePrompt(tokenizer, prompt, args.String("system"));
        if (ids.Count == 0) throw new UsageException("the prompt encodes to no tokens");

        var stream = new StreamingText(tokenizer, output.Out);
        var clock = Stopwatch.StartNew();
        settings = TextGenerator.WithTokenizerDefaults(model, tokenizer, settings);
        var (input, mask) = PromptBatch.LeftPad([ids], settings.PadTokenId!.Value);
        using (input)
        using (mask)
        using (var result = TextGenerator.Generate(model, input, mask, settings, step => { if (step.Active[0]) stream.Add(step.Tokens[0]); }, tokenizer))
        {
            stream.Finish();
            clock.Stop();
            int n = result.Tokens[0].Count;
            output.Error.WriteLine($"[{n} tokens in {clock.Elapsed.TotalSeconds:F2} s, {n / clock.Elapsed.TotalSeconds:F1} tokens/s, " +
                $"stopped by {result.FinishReasons[0].ToString().ToLowerInvariant()}, prompt {ids.Count} tokens, template {template?.Name ?? "none"}, {model.DType}, decode: {result.Decoder}]");
        }
        return 0;
    }

    /// <summary>Writes the decoded completion as it grows. Byte-level tokens can end inside a UTF-8 character, so text
    /// ending in U+FFFD is held back until the next token completes it.</summary>
    private sealed class StreamingText(TextTokenizer tokenizer, TextWriter output)
    {
        private readonly List<int> _ids = [];
        private int _written;

        public void Add(long id)
        {
            _ids.Add((int)id);
            var text = tokenizer.Decode(_ids);
            if (text.EndsWith('\uFFFD')) return;
            Write(text);
        }

        public void Finish()
        {
            Write(tokenizer.Decode(_ids));
            output.WriteLine();
            output.Flush();
        }

        private void Write(string text)
        {
            if (text.Length <= _written) return;
            output.Write(text[_written..]);
            output.Flush();
            _written = text.Length;
        }
    }
}
