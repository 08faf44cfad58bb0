// Model setup shared by every trainer (SFT, reward modelling, and the PPO/DPO policy, reference and value models):
//
//   spec.Model   preset -> built-in tokenizer + ModelPresets.Create (fresh random init from spec.Seed)
//                path   -> TextTokenizer.Load + ModelLoader.Load / LoadScoreModel (a causal LM folder gets a fresh
//                          score head with num_labels = 1)
//   weights      fp32 masters; Precision.Bf16 sets ComputeDType = bf16 (our autocast)
//   adapter      Full | Lora (PEFT LoraConfig from spec.Adapter; a score head is trained in full) | Freeze
//   template     spec.Template, else the one recorded in the folder's rlhfstudio.json, else the tokenizer's default
//   preflight    EOS exists (pad falls back to it), ids fit the embedding table
//
// Lower-level pieces (LoadTokenizer, ChooseTemplate, LoadCausalLm, LoadScoreModel) are public for models that are
// not trained, such as a frozen PPO/DPO reference.
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using RlhfStudio.Engine.Text;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers;

public static class ModelSetup
{
    /// <summary>A causal LM to train as <paramref name="spec"/> says, with its tokenizer and template. Reports the model
    /// and the trainable-parameter line as events.</summary>
    public static TrainableModel<CausalLanguageModel> ForCausalLm(RunSpec spec, IRunReporter? reporter = null) =>
        Prepare(spec, reporter, (tokenizer, device) => LoadCausalLm(spec.Model, tokenizer, spec.Seed, device));

    /// <summary>A score model (num_labels = 1) to train as <paramref name="spec"/> says: a sequence-classification folder
    /// as saved, or a causal LM folder or preset with a fresh score head drawn from spec.Seed.</summary>
    public static TrainableModel<ScoreModel> ForScoreModel(RunSpec spec, IRunReporter? reporter = null) =>
        Prepare(spec, reporter, (tokenizer, device) => LoadScoreModel(spec.Model, tokenizer, spec.Seed, device));

    /// <summary>The tokenizer of a model: the built-in one for presets, else the folder's files.</summary>
    public static TextTokenizer LoadTokenizer(ModelRef model) =>
        model.Preset is not null ? TextTokenizer.BuiltIn() : TextTokenizer.Load(FolderOf(model));

    /// <summary>The folder of a path model reference (run ids and stages must have been resolved to paths by the host).</summary>
    public static string FolderOf(ModelRef model) => model.Path
        ?? throw new TrainerSetupException(model.Preset is not null
            ? $"model {model} is a preset, not a folder"
            : $"model {model} must be resolved to a folder before the job runs (the host replaces run ids and stages with the run's output folder)");

    /// <summary>The template to use: <paramref name="name"/> when given, else the one recorded in the model folder's
    /// rlhfstudio.json (so later stages format text as training did), else <see cref="PromptTemplates.DefaultFor"/>.</summary>
    public static PromptTemplate ChooseTemplate(string? name, TextTokenizer tokenizer, string? folder = null, string? modelType = null)
    {
        if (name is not null) return PromptTemplates.Get(name);
        if (folder is not null && ModelRecord.Read(folder) is { } record) return PromptTemplates.Get(record.Template);
        return PromptTemplates.DefaultFor(tokenizer, modelType);
    }

    /// <summary>The device of a spec, with a clear failure when it is not available.</summary>
    public static Device DeviceOf(RunSpec spec)
    {
        try { return TorchRuntime.ParseDevice(spec.Device); }
        catch (InvalidOperationException e) { throw new TrainerSetupException(e.Message, e); }
    }

    /// <summary>A causal LM in fp32 on <paramref name="device"/>, without adapters: a preset freshly initialised from
    /// <paramref name="seed"/> (special ids from <paramref name="tokenizer"/>), or a folder's weights.</summary>
    public static CausalLanguageModel LoadCausalLm(ModelRef model, TextTokenizer tokenizer, long seed, Device device)
    {
        if (model.Preset is { } preset)
        {
            CheckPreset(preset);
            return ModelPresets.Create(preset, tokenizer.VocabSize, seed, ScalarType.Float32, device,
                tokenizer.BosId, tokenizer.EosId is int eos ? [eos] : [], tokenizer.PadId);
        }
        return ModelLoader.Load(FolderOf(model), ScalarType.Float32, device);
    }

    /// <summary>A score model (num_labels = 1) in fp32: a preset or causal LM folder gets a fresh score head drawn from
    /// <paramref name="seed"/>; a sequence-classification folder loads as saved and must have one label.</summary>
    public static ScoreModel LoadScoreModel(ModelRef model, TextTokenizer tokenizer, long seed, Device device)
    {
        if (model.Preset is { } preset)
        {
            CheckPreset(preset);
            var config = ModelPresets.Config(preset, tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId is int eos ? [eos] : [], tokenizer.PadId)
                with { NumLabels = 1, Architectures = ["LlamaForSequenceClassification"] };
            var score = new ScoreModel(config, ScalarType.Float32, device);
            try
            {
                score.InitializeWeights(seed);
                return score;
            }
            catch
            {
                score.Dispose();
                throw;
            }
        }
        var folder = FolderOf(model);
        var head = ModelLoader.ReadConfig(folder);
        if (head.Head == ModelHead.SequenceClassification && head.NumLabels != 1)
            throw new TrainerSetupException($"{folder} is a classifier with {head.NumLabels} labels; a reward model needs one (num_labels = 1)");
        return ModelLoader.LoadScoreModel(folder, ScalarType.Float32, device, numLabels: 1, seed: seed);
    }

    /// <summary>Checks that training text can be built for this model: an EOS token (pad falls back to it; the
    /// templates mark the EOS after a completion as trained, and batches are masked by length, never by comparing ids
    /// with the pad id, so pad == eos is safe) and token ids that fit the embedding table.</summary>
    public static void Preflight(TextTokenizer tokenizer, TransformerModel model, string modelName)
    {
        if (tokenizer.EosId is null)
            throw new TrainerSetupException($"the tokenizer of {modelName} has no EOS token: completions could not be ended. " +
                "Set eos_token in its tokenizer_config.json");
        if (tokenizer.PadId is null)
            throw new TrainerSetupException($"the tokenizer of {modelName} has no pad token and no EOS to fall back on");
        if (tokenizer.VocabSize > model.Config.VocabSize)
            throw new TrainerSetupException($"the tokenizer of {modelName} has {tokenizer.VocabSize} ids but the model's embedding table only " +
                $"{model.Config.VocabSize} (vocab_size in config.json): the tokenizer does not belong to this model");
    }

    private static void CheckPreset(string preset)
    {
        if (!ModelPresets.Names.Contains(preset))
            throw new TrainerSetupException($"unknown model preset \"{preset}\": use one of {string.Join(", ", ModelPresets.Names)}");
    }

    private static TrainableModel<TModel> Prepare<TModel>(RunSpec spec, IRunReporter? reporter, Func<TextTokenizer, Device, TModel> load)
        where TModel : TransformerModel
    {
        var device = DeviceOf(spec);
        string? folder = spec.Model.Preset is null ? FolderOf(spec.Model) : null;
        // The folder's own checks (missing folder, pickle weights, config) read better than a tokenizer error.
        if (folder is not null) ModelLoader.ReadConfig(folder);
        var tokenizer = LoadTokenizer(spec.Model);
        var model = load(tokenizer, device);
        try
        {
            var name = spec.Model.ToString();
            Preflight(tokenizer, model, name);
            var template = ChooseTemplate(spec.Template, tokenizer, folder, model.Config.ModelType);
            TrainableParameterReport report = spec.Adapter.Kind switch
            {
                AdapterKind.Lora => ApplyLora(model, spec, folder).Report,
                AdapterKind.Freeze => Freeze(model, spec.Adapter.FrozenLayers),
                _ => Freezing.Report(model),
            };
            if (spec.Precision == Precision.Bf16) model.ComputeDType = ScalarType.BFloat16;
            model.train();
            reporter?.Event(RunEvent.Info($"model {name}: {model.Config.ArchitectureFor(model.Head)}, {model.Config.NumHiddenLayers} layers, " +
                $"hidden {model.Config.HiddenSize}, vocab {model.Config.VocabSize}; {spec.Adapter.Kind.ToString().ToLowerInvariant()} training, " +
                $"fp32 weights, {(spec.Precision == Precision.Bf16 ? "bf16" : "fp32")} compute on {device}"));
            reporter?.Event(RunEvent.Info(report.ToString()));
            reporter?.Event(RunEvent.Info($"tokenizer: {tokenizer}; prompt template: {template.Name}"));
            return new TrainableModel<TModel>(model, tokenizer, template, device, spec.Adapter.Kind, name);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static LoraApplyResult ApplyLora(TransformerModel model, RunSpec spec, string? folder)
    {
        var a = spec.Adapter;
        var config = new LoraConfig
        {
            Rank = a.Rank,
            Alpha = a.Alpha,
            Dropout = a.Dropout,
            TargetModules = a.TargetModules,
            BaseModelNameOrPath = folder,
        };
        try { return Lora.Apply(model, config, spec.Seed); }
        catch (ArgumentException e) { throw new TrainerSetupException($"adapter: {e.Message}", e); }
    }

    private static TrainableParameterReport Freeze(TransformerModel model, int layers)
    {
        if (layers > model.Config.NumHiddenLayers)
            throw new TrainerSetupException($"adapter.frozenLayers is {layers} but the model has only {model.Config.NumHiddenLayers} layers");
        return Freezing.FreezeLowerLayers(model, layers).Report;
    }
}
