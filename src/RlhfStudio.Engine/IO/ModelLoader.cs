using RlhfStudio.Engine.Models;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.IO;

/// <summary>Loads Hugging Face model folders (config.json + safetensors) into the engine's modules. A load either
/// returns a fully loaded model or throws (the half-built module is disposed).</summary>
public static class ModelLoader
{
    public const string ConfigFileName = "config.json";

    /// <summary>Loads a causal language model in <paramref name="dtype"/> whatever the stored dtype.</summary>
    public static CausalLanguageModel Load(string folder, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var config = ReadConfig(folder);
        if (config.Head == ModelHead.SequenceClassification)
            throw ModelLoadException.InFile(Path.Combine(folder, ConfigFileName),
                $"holds a sequence-classification model ({config.Architectures[0]}), not a causal language model; load it as a score model");
        return Build(() => new CausalLanguageModel(config, dtype, device), model => LoadWeights(model, folder));
    }

    /// <summary>Loads a score model: from a sequence-classification folder as saved, or from a causal LM folder with a
    /// fresh <c>score</c> head of <paramref name="numLabels"/> outputs (default 1) drawn from <paramref name="seed"/>
    /// (its lm_head, if any, is dropped).</summary>
    public static ScoreModel LoadScoreModel(string folder, ScalarType dtype = ScalarType.Float32, Device? device = null,
        int? numLabels = null, long seed = 0)
    {
        var config = ReadConfig(folder);
        if (config.Head == ModelHead.SequenceClassification)
        {
            if (numLabels is int n && n != config.NumLabels)
                throw ModelLoadException.InFile(Path.Combine(folder, ConfigFileName), $"has {config.NumLabels} labels but {n} were asked for");
            return Build(() => new ScoreModel(config, dtype, device), model => LoadWeights(model, folder));
        }
        var scoreConfig = config with { NumLabels = numLabels ?? 1, Labels = null };
        return Build(() => new ScoreModel(scoreConfig, dtype, device), model =>
        {
            InitializeScore(model, seed);
            LoadWeights(model, folder, allowMissing: model.FreshParameters, ignore: ["lm_head.weight"]);
        });
    }

    /// <summary>Reads every weight of <paramref name="model"/> from the folder's safetensors (single or sharded),
    /// converting dtype tensor by tensor. Throws if a tensor is missing, unexpected or of the wrong shape.</summary>
    public static void LoadWeights(TransformerModel model, string folder, IReadOnlySet<string>? allowMissing = null,
        IReadOnlyCollection<string>? ignore = null)
    {
        var expected = model.HfWeights();   // the base weights: LoRA adapters (if any) are not in HF checkpoints
        string prefix = model.Trunk.Prefix + ".";
        using var checkpoint = CheckpointFiles.Open(folder);
        var loaded = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in checkpoint.Tensors.Keys.Order(StringComparer.Ordinal))
        {
            // Files saved from a bare base model (LlamaModel, GPT2Model) have no "model." / "transformer." prefix.
            string key = !expected.ContainsKey(name) && expected.ContainsKey(prefix + name) ? prefix + name : name;
            string relative = key.StartsWith(prefix, StringComparison.Ordinal) ? key[prefix.Length..] : key;
            if (model.Trunk.IsIgnoredCheckpointKey(relative)) continue;
            if (ignore?.Contains(key) == true) continue;
            // Some tied checkpoints store lm_head.weight anyway; transformers ties it to the embeddings and ignores it.
            if (key == "lm_head.weight" && model.Config.TieWordEmbeddings) continue;
            var file = checkpoint.Tensors[name].Path;
            if (!expected.TryGetValue(key, out var target))
                throw ModelLoadException.InFile(file, $"is not a weight of {model.Config.ArchitectureFor(model.Head)} with this config (unexpected tensor)", name);
            if (!loaded.Add(key))
                throw ModelLoadException.InFile(file, $"maps to \"{key}\", which another tensor already loaded", name);
            checkpoint.ReadInto(name, target);
        }
        var missing = expected.Keys.Where(k => !loaded.Contains(k) && allowMissing?.Contains(k) != true).Order(StringComparer.Ordinal).ToList();
        if (missing.Count > 0)
        {
            var file = checkpoint.Tensors.Values.Select(f => f.Path).Distinct().First();
            throw new ModelLoadException($"{folder}: {missing.Count} weight(s) missing from the checkpoint, e.g. tensor \"{missing[0]}\"" +
                (missing.Count > 1 ? $" (also: {string.Join(", ", missing.Skip(1).Take(4))}{(missing.Count > 5 ? ", ..." : "")})" : "") +
                $"; weights read from {file}")
            { FilePath = folder, TensorName = missing[0] };
        }
    }

    /// <summary>Reads and validates <c>config.json</c> of a folder; refuses pickle files given instead of a folder.</summary>
    public static ModelConfig ReadConfig(string folder)
    {
        if (File.Exists(folder)) CheckpointFiles.RefusePickle(folder);
        if (!Directory.Exists(folder)) throw new ModelLoadException($"{folder}: model folder not found") { FilePath = folder };
        return ModelConfig.Load(Path.Combine(folder, ConfigFileName));
    }

    private static void InitializeScore(ScoreModel model, long seed)
    {
        using var noGrad = no_grad();
        var gen = new Generator((ulong)seed);
        using var values = empty(model.score.weight!.shape, dtype: ScalarType.Float32).normal_(0, model.Config.InitializerRange, gen);
        model.score.weight!.copy_(values);
    }

    private static T Build<T>(Func<T> create, Action<T> load) where T : TransformerModel
    {
        var model = create();
        try
        {
            load(model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
