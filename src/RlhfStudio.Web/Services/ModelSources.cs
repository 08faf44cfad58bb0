using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using static TorchSharp.torch;

namespace RlhfStudio.Web.Services;

/// <summary>What a user can pick to generate from or to judge with.</summary>
public enum ModelSourceKind { Preset, Folder, RunFinal, Checkpoint }

/// <summary>A model the user picked: a built-in preset (Value = name), a registered or typed folder
/// (Value = path), a completed run's final model (RunId) or one checkpoint of a run (RunId + Step).</summary>
public sealed record ModelSource(ModelSourceKind Kind, string? Value = null, long? RunId = null, long? Step = null)
{
    public static ModelSource Preset(string name) => new(ModelSourceKind.Preset, name);
    public static ModelSource Folder(string path) => new(ModelSourceKind.Folder, path);
    public static ModelSource Final(long runId) => new(ModelSourceKind.RunFinal, RunId: runId);
    public static ModelSource Checkpoint(long runId, long step) => new(ModelSourceKind.Checkpoint, RunId: runId, Step: step);

    public override string ToString() => Kind switch
    {
        ModelSourceKind.Preset => $"preset {Value}",
        ModelSourceKind.Folder => Value ?? "",
        ModelSourceKind.RunFinal => $"run #{RunId} final",
        _ => $"run #{RunId} step {Step}",
    };
}

/// <summary>A model source turned into files: a folder of weights (HF layout), or a preset built from a seed, or a
/// PEFT adapter folder over a base. <see cref="Base"/> also supplies the tokenizer when the folder has none
/// (checkpoints of runs on a built-in preset). <see cref="Template"/> is the run's prompt template, if it set one.</summary>
public sealed record ResolvedModel(string Label, string? Folder = null, string? Preset = null, int Seed = 0,
    string? AdapterFolder = null, ResolvedModel? Base = null, string? Template = null)
{
    /// <summary>Identifies the weights (cache key).</summary>
    public string Key => AdapterFolder is not null ? $"{Base?.Key}+{AdapterFolder}" : Folder ?? $"preset:{Preset}:{Seed}";
}

/// <summary>Resolves model sources against the run records and loads them for generation or scoring.
/// Loading happens on the caller's thread (a worker thread: TorchSharp dispose scopes are per thread).</summary>
public sealed class ModelSources(RunQueries queries)
{
    public async Task<ResolvedModel> ResolveAsync(ModelSource source, CancellationToken cancel = default)
    {
        switch (source.Kind)
        {
            case ModelSourceKind.Preset:
                if (!ModelPresets.Names.Contains(source.Value ?? ""))
                    throw new ModelSourceException($"unknown preset \"{source.Value}\" (presets: {string.Join(", ", ModelPresets.Names)})");
                return new ResolvedModel($"preset {source.Value}", Preset: source.Value);
            case ModelSourceKind.Folder:
                if (string.IsNullOrWhiteSpace(source.Value) || !File.Exists(Path.Combine(source.Value, ModelLoader.ConfigFileName)))
                    throw new ModelSourceException($"\"{source.Value}\" is not a model folder (no config.json)");
                return new ResolvedModel(source.Value, Folder: source.Value);
        }
        var run = await queries.GetRunAsync(source.RunId ?? 0, cancel)
                  ?? throw new ModelSourceException($"run #{source.RunId} does not exist");
        var spec = RunSpec.FromJson(run.SpecJson);
        var baseModel = await ResolveRefAsync(spec.Model, spec.Seed, cancel);
        string folder;
        string label;
        if (source.Kind == ModelSourceKind.RunFinal)
        {
            if (run.Status != RunStatus.Completed || run.FinalModelPath is null)
                throw new ModelSourceException($"run #{run.Id} has no final model (it is {run.Status.ToString().ToLowerInvariant()})");
            folder = run.FinalModelPath;
            label = $"#{run.Id} {run.Name} (final)";
        }
        else
        {
            var checkpoint = (await queries.CheckpointsAsync(run.Id, cancel)).FirstOrDefault(c => c.Step == source.Step)
                             ?? throw new ModelSourceException($"run #{run.Id} has no checkpoint at step {source.Step}");
            if (!Directory.Exists(checkpoint.Path))
                throw new ModelSourceException($"the checkpoint folder of step {source.Step} is gone ({checkpoint.Path}); it may have been removed by retention");
            folder = checkpoint.Path;
            label = $"#{run.Id} {run.Name} (step {checkpoint.Step})";
        }
        return File.Exists(Path.Combine(folder, LoraConfig.FileName))
            ? new ResolvedModel(label, AdapterFolder: folder, Base: baseModel, Template: spec.Template)
            : new ResolvedModel(label, Folder: folder, Base: baseModel, Template: spec.Template);
    }

    private async Task<ResolvedModel> ResolveRefAsync(ModelRef model, int seed, CancellationToken cancel) => model switch
    {
        { Preset: { } p } => new ResolvedModel($"preset {p}", Preset: p, Seed: seed),
        { Path: { } path } => new ResolvedModel(path, Folder: path),
        { RunId: long id } => await ResolveAsync(ModelSource.Final(id), cancel),
        _ => throw new ModelSourceException($"model {model} cannot be resolved outside its pipeline"),
    };

    /// <summary>The tokenizer that goes with the weights: the folder's own, else its base's, else the built-in one.</summary>
    public static TextTokenizer TokenizerFor(ResolvedModel model)
    {
        foreach (var folder in new[] { model.AdapterFolder, model.Folder })
            if (folder is not null && (File.Exists(Path.Combine(folder, "tokenizer.json")) || File.Exists(Path.Combine(folder, "tokenizer.model"))))
                return TextTokenizer.Load(folder);
        return model.Base is not null ? TokenizerFor(model.Base) : TextTokenizer.BuiltIn();
    }

    /// <summary>The template prompts are formatted with: the run's, else the tokenizer's chat template, else StackLLaMA's.</summary>
    public static PromptTemplate TemplateFor(ResolvedModel model, TextTokenizer tokenizer) =>
        model.Template is { } name ? PromptTemplates.Get(name) : PromptTemplates.DefaultFor(tokenizer);

    /// <summary>Loads a causal LM (fp32) with its tokenizer. The caller disposes the model.</summary>
    public static (CausalLanguageModel Model, TextTokenizer Tokenizer) LoadLanguageModel(ResolvedModel model)
    {
        var tokenizer = TokenizerFor(model);
        if (model.AdapterFolder is not null)
        {
            var (baseModel, _) = LoadLanguageModel(model.Base ?? throw new ModelSourceException("an adapter checkpoint needs its base model"));
            try
            {
                Lora.Load(baseModel, model.AdapterFolder);
                return (baseModel, tokenizer);
            }
            catch
            {
                baseModel.Dispose();
                throw;
            }
        }
        if (model.Preset is { } preset)
            return (ModelPresets.Create(preset, tokenizer.VocabSize, model.Seed, bosTokenId: tokenizer.BosId,
                eosTokenIds: tokenizer.EosId is int eos ? [eos] : [], padTokenId: tokenizer.PadId), tokenizer);
        return (ModelLoader.Load(model.Folder!), tokenizer);
    }

    /// <summary>Loads a reward (score) model with its tokenizer; adapter folders are applied over their base's score model.</summary>
    public static (ScoreModel Model, TextTokenizer Tokenizer) LoadScoreModel(ResolvedModel model)
    {
        var tokenizer = TokenizerFor(model);
        if (model.AdapterFolder is not null)
        {
            var baseModel = model.Base?.Folder ?? throw new ModelSourceException("a reward adapter needs a base model folder");
            var score = ModelLoader.LoadScoreModel(baseModel);
            try
            {
                Lora.Load(score, model.AdapterFolder);
                return (score, tokenizer);
            }
            catch
            {
                score.Dispose();
                throw;
            }
        }
        if (model.Folder is null) throw new ModelSourceException($"{model.Label} is not a trained reward model");
        return (ModelLoader.LoadScoreModel(model.Folder), tokenizer);
    }

    /// <summary>Scores one (prompt, completion) with a reward model: formatted with the template, EOS appended as in
    /// training, read at the last token (TRL's pooling at the last real token).</summary>
    public static double Score(ScoreModel model, TextTokenizer tokenizer, PromptTemplate template, string prompt, string completion)
    {
        using var scope = NewDisposeScope();
        var ids = template.Tokenize(tokenizer, prompt, completion).InputIds;
        using var input = tensor(ids.Select(i => (long)i).ToArray(), dtype: ScalarType.Int64).unsqueeze(0);
        using var _ = no_grad();
        var scores = model.Forward(input);                        // (1, T, L)
        var pooled = ScoreModel.Pool(scores, input, null);         // (1, L): no padding, so the last position
        return pooled[0, 0].to(ScalarType.Float32).item<float>();
    }
}

/// <summary>A model source that cannot be used, in words the user can act on.</summary>
public sealed class ModelSourceException(string message) : Exception(message);
