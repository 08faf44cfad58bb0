using System.Diagnostics;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Web.Services;

/// <summary>Sampling settings the playground offers (transformers' GenerationConfig meanings).</summary>
public sealed record PlaygroundSettings(int MaxNewTokens = 64, double Temperature = 0.7, int TopK = 0, double TopP = 1.0, long Seed = 0,
    string? Template = null, bool UseTemplate = true);

/// <summary>How a playground generation ended.</summary>
public sealed record PlaygroundResult(string Text, int Tokens, double Seconds, string FinishReason, string Template, double LoadSeconds, string? Decoder = null);

/// <summary>Generates from a model on a dedicated thread, streaming the decoded text as tokens arrive. One generation
/// at a time for the whole studio (the CPU is shared with training: a second one would only slow both); the last loaded
/// model stays cached so that trying other settings on the same checkpoint does not reload it.</summary>
public sealed class PlaygroundService : IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private string? _cachedKey;
    private CausalLanguageModel? _cachedModel;
    private TextTokenizer? _cachedTokenizer;

    /// <summary>True while a generation runs (others wait for it).</summary>
    public bool Busy => _gate.CurrentCount == 0;

    /// <summary>Generates a completion of <paramref name="prompt"/>; <paramref name="onText"/> receives the whole text so far
    /// after each token (on the generation thread). Cancelling stops after the current token.</summary>
    public async Task<PlaygroundResult> GenerateAsync(ResolvedModel model, string prompt, PlaygroundSettings settings,
        Action<string> onText, CancellationToken cancel)
    {
        var generation = new GenerationSettings
        {
            MaxNewTokens = settings.MaxNewTokens,
            Temperature = settings.Temperature,
            TopK = settings.TopK,
            TopP = settings.TopP,
            Seed = settings.Seed,
        };
        generation.Validate();
        await _gate.WaitAsync(cancel);
        try
        {
            return await Task.Factory.StartNew(() => Generate(model, prompt, settings, generation, onText, cancel),
                CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
        finally
        {
            _gate.Release();
        }
    }

    private PlaygroundResult Generate(ResolvedModel source, string prompt, PlaygroundSettings settings, GenerationSettings generation,
        Action<string> onText, CancellationToken cancel)
    {
        var load = Stopwatch.StartNew();
        var (model, tokenizer) = Load(source);
        load.Stop();
        var template = !settings.UseTemplate ? null
            : settings.Template is { } name ? PromptTemplates.Get(name) : ModelSources.TemplateFor(source, tokenizer);
        var ids = template is null ? tokenizer.Encode(prompt, addBos: tokenizer.AddBosByDefault) : template.TokenizePrompt(tokenizer, prompt);
        if (ids.Count == 0) throw new ArgumentException("the prompt encodes to no tokens");

        generation = TextGenerator.WithTokenizerDefaults(model, tokenizer, generation);
        var text = new StreamingText(tokenizer, onText);
        var clock = Stopwatch.StartNew();
        var (input, mask) = PromptBatch.LeftPad([ids], generation.PadTokenId!.Value, model.Device);
        using (input)
        using (mask)
        {
            try
            {
                using var result = TextGenerator.Generate(model, input, mask, generation, step => { if (step.Active[0]) text.Add(step.Tokens[0]); }, tokenizer, cancel);
                clock.Stop();
                return new PlaygroundResult(text.Finish(), result.Tokens[0].Count, clock.Elapsed.TotalSeconds,
                    result.FinishReasons[0].ToString().ToLowerInvariant(), template?.Name ?? "none", load.Elapsed.TotalSeconds, result.Decoder);
            }
            catch (OperationCanceledException)
            {
                // Stopped by the user: keep what was generated so far.
                clock.Stop();
                return new PlaygroundResult(text.Finish(), text.Count, clock.Elapsed.TotalSeconds, "stopped", template?.Name ?? "none", load.Elapsed.TotalSeconds);
            }
        }
    }

    /// <summary>The cached model when the same weights are asked for again; otherwise the old one is disposed first.</summary>
    private (CausalLanguageModel, TextTokenizer) Load(ResolvedModel source)
    {
        if (_cachedKey == source.Key && _cachedModel is not null) return (_cachedModel, _cachedTokenizer!);
        DropCache();
        var (model, tokenizer) = ModelSources.LoadLanguageModel(source);
        model.eval();
        (_cachedKey, _cachedModel, _cachedTokenizer) = (source.Key, model, tokenizer);
        return (model, tokenizer);
    }

    private void DropCache()
    {
        _cachedModel?.Dispose();
        (_cachedKey, _cachedModel, _cachedTokenizer) = (null, null, null);
    }

    public void Dispose()
    {
        DropCache();
        _gate.Dispose();
    }

    /// <summary>The decoded completion as it grows. Byte-level tokens can end inside a UTF-8 character: text ending
    /// in U+FFFD is held back until the next token completes it.</summary>
    private sealed class StreamingText(TextTokenizer tokenizer, Action<string> onText)
    {
        private readonly List<int> _ids = [];
        public int Count => _ids.Count;

        public void Add(long id)
        {
            _ids.Add((int)id);
            var text = tokenizer.Decode(_ids);
            if (!text.EndsWith('\uFFFD')) onText(text);
        }

        public string Finish()
        {
            var text = tokenizer.Decode(_ids);
            onText(text);
            return text;
        }
    }
}
