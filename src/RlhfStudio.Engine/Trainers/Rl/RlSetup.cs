// Preflight checks and model loading for PPO and RLOO. A run refuses to start, with a message naming the problem,
// when it would train against the wrong reference, score with something that is not a reward model, or could never
// end a response. See RlModels.cs for which model is which.
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Text;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>A problem that stops an RL run before it starts; the message is meant for the user.</summary>
public sealed class RlSetupException(string message) : Exception(message);

public static class RlSetup
{
    public const string PresetReferenceWarning = "reference-is-preset";

    /// <summary>Checks the spec against the files it names and loads everything a run needs. Reports warnings (a preset
    /// policy) through <paramref name="reporter"/>. Throws <see cref="RlSetupException"/> for problems the user must fix.</summary>
    public static (RlModels Models, PromptSet Prompts) Build(RlSpec spec, IRunReporter reporter)
    {
        CheckSizes(spec);
        var policySource = Resolve(spec.Model, "model");
        if (policySource.Path is { } policyFolder) CheckPolicyFolder(policyFolder, "model");
        if (policySource.Preset is not null)
            reporter.Event(RunEvent.Warn(PresetReferenceWarning, $"the policy is the randomly initialised preset \"{policySource.Preset}\", not an SFT model: " +
                "PPO/RLOO should start from (and be held to) a supervised fine-tuned policy. Use a preset only for tests."));
        if (spec.Sampling.TopK != 0 || spec.Sampling.TopP < 1 || spec.Sampling.MinNewTokens > 0)
            reporter.Event(RunEvent.Warn("sampling-ignored", "rollouts sample with plain temperature (TRL: top_k 0, top_p 1, no min_new_tokens): the PPO " +
                "log-probabilities assume that distribution, so sampling.topK, topP and minNewTokens are ignored for rollouts"));

        var loaded = new List<IDisposable>();
        try
        {
            // The policy: tokenizer, template (the SFT folder's recorded one), adapters and compute dtype as every trainer.
            var policy = Track(ModelSetup.ForCausalLm(spec, reporter), loaded);
            var tokenizer = policy.Tokenizer;
            if (tokenizer.EosId is not int eos || eos < 0 || eos >= policy.Model.Config.VocabSize)
                throw new RlSetupException($"the tokenizer of {policySource} has no EOS token inside the model's vocabulary: responses could never end");
            var compute = policy.Model.ComputeDType;

            CausalLanguageModel? reference = null;
            if (spec.Reference is not null || spec.Adapter.Kind != AdapterKind.Lora)
            {
                var referenceSource = spec.Reference is null ? policySource : Resolve(spec.Reference, "reference");
                if (referenceSource.Path is { } rp) CheckPolicyFolder(rp, "reference");
                reference = Track(ModelSetup.LoadCausalLm(referenceSource, tokenizer, spec.Seed, policy.Device), loaded);
                if (reference.Config.VocabSize != policy.Model.Config.VocabSize)
                    throw new RlSetupException($"the reference {referenceSource} has {reference.Config.VocabSize} token ids, the policy {policy.Model.Config.VocabSize}: they must share a tokenizer");
                reference.ComputeDType = compute;
                foreach (var parameter in reference.parameters()) parameter.requires_grad = false;
            }

            ISequenceScorer scorer;
            string? rewardFolder = null;
            if (spec.Reward.Builtin is { } builtin)
            {
                scorer = BuiltinScorer.Named(builtin)
                    ?? throw new RlSetupException($"reward.builtin \"{builtin}\" is not a built-in scorer: use one of {string.Join(", ", BuiltinScorer.Names)}");
            }
            else
            {
                rewardFolder = spec.Reward.ModelPath ?? throw new RlSetupException($"reward {spec.Reward} must be resolved to a reward model folder (reward.modelPath) before the run starts");
                CheckRewardModel(rewardFolder, tokenizer, policy.Template);
                var rewardModel = ModelLoader.LoadScoreModel(rewardFolder, device: policy.Device);
                rewardModel.ComputeDType = compute;
                foreach (var parameter in rewardModel.parameters()) parameter.requires_grad = false;
                rewardModel.eval();
                scorer = new RewardModelScorer(rewardModel, $"reward model {rewardFolder}");
            }
            loaded.Add(scorer);

            TrainableModel<ScoreModel>? value = null;
            ValueHead? valueHead = null;
            if (spec is PpoSpec { SharedValueHead: true } shared)
                valueHead = Track(new ValueHead(policy.Model.Config.HiddenSize, compute, policy.Device) { LearningRateScale = shared.ValueHeadLearningRateScale }, loaded);
            else if (spec is PpoSpec ppo)
            {
                // spec.ValueModel, else the reward model (TRL's default), else the policy's starting weights with a fresh head.
                var valueSource = ppo.ValueModel is { } v ? Resolve(v, "valueModel") : rewardFolder is not null ? ModelRef.FromPath(rewardFolder) : policySource;
                value = Track(ModelSetup.ForScoreModel(spec with { Model = valueSource, Template = policy.Template.Name }), loaded);
            }

            var prompts = PromptSet.Load(spec, tokenizer, policy.Template, spec.MaxLength - spec.Sampling.MaxNewTokens);
            int perStep = spec.Training.BatchSize / (spec is RlooSpec rloo ? rloo.RlooK : 1);
            if (prompts.Count < perStep)
                throw new RlSetupException($"the dataset {spec.Dataset} has {prompts.Count} usable prompts ({prompts.Skipped} longer than maxLength - sampling.maxNewTokens = " +
                    $"{spec.MaxLength - spec.Sampling.MaxNewTokens} tokens were left out), fewer than the {perStep} each step needs");
            if (prompts.Skipped > 0)
                reporter.Event(RunEvent.Info($"{prompts.Skipped} prompts longer than {spec.MaxLength - spec.Sampling.MaxNewTokens} tokens were left out (maxLength - sampling.maxNewTokens)"));
            if (scorer is BuiltinScorer && prompts.Prompts.FirstOrDefault(q => !ArithmeticTask.TryParse(q.Text, out _)) is { } bad)
                throw new RlSetupException($"the built-in {spec.Reward.Builtin} scorer cannot score answers to \"{Shorten(bad.Text)}\" (not one of its questions): " +
                    "use the built-in arithmetic prompts, or a reward model");
            return (new RlModels(policy, reference, value, scorer, valueHead: valueHead), prompts);
        }
        catch
        {
            foreach (var item in loaded) item.Dispose();
            throw;
        }
    }

    /// <summary>Checks that the batch splits into mini- and micro-batches (and RLOO groups).</summary>
    public static void CheckSizes(RlSpec spec)
    {
        int batch = spec.Training.BatchSize, minis = spec.NumMiniBatches, accumulation = spec.Training.GradientAccumulation;
        if (batch % minis != 0 || batch / minis % accumulation != 0)
            throw new RlSetupException($"training.batchSize {batch} must split into numMiniBatches ({minis}) mini-batches of gradientAccumulation ({accumulation}) " +
                $"equal micro-batches: make batchSize a multiple of {minis * accumulation}");
        if (spec is RlooSpec rloo && batch % rloo.RlooK != 0)
            throw new RlSetupException($"training.batchSize {batch} (responses per step) must be a multiple of rlooK ({rloo.RlooK}): each prompt is sampled rlooK times");
        if (spec.Sampling.MaxNewTokens >= spec.MaxLength)
            throw new RlSetupException($"sampling.maxNewTokens ({spec.Sampling.MaxNewTokens}) leaves no room for the prompt within maxLength ({spec.MaxLength})");
    }

    private static ModelRef Resolve(ModelRef model, string field)
    {
        if (model.Path is not null || model.Preset is not null) return model;
        throw new RlSetupException($"{field} {model} must be resolved to a model folder by the host before the run starts");
    }


    // The policy must be a causal LM: a reward model's folder (a score head) given as the policy is a common slip.
    private static void CheckPolicyFolder(string folder, string field)
    {
        var config = ModelLoader.ReadConfig(folder);
        if (config.Head != ModelHead.CausalLM)
            throw new RlSetupException($"{field} {folder} is a {config.Architectures[0]} (a reward/score model), not a causal language model: " +
                "PPO starts from the SFT model, and the reward model goes in reward.modelPath");
    }

    /// <summary>The reward model must have a one-output score head and share the policy's tokenizer (same ids, same
    /// special tokens): its scores are read off the policy's token ids.</summary>
    public static void CheckRewardModel(string folder, TextTokenizer policyTokenizer, PromptTemplate policyTemplate)
    {
        var config = ModelLoader.ReadConfig(folder);
        if (config.Head != ModelHead.SequenceClassification)
            throw new RlSetupException($"reward model {folder} has no score head (architectures: {string.Join(", ", config.Architectures.DefaultIfEmpty("none"))}); " +
                "it must be a ...ForSequenceClassification model, e.g. the output of a reward-modelling run");
        if (config.NumLabels != 1)
            throw new RlSetupException($"reward model {folder} has {config.NumLabels} outputs; a reward model has exactly one (num_labels = 1)");
        using (var weights = CheckpointFiles.Open(folder))
            if (!weights.Tensors.ContainsKey("score.weight"))
                throw new RlSetupException($"reward model {folder} has no score.weight tensor: its score head was never saved");
        TextTokenizer rewardTokenizer;
        try { rewardTokenizer = TextTokenizer.Load(folder); }
        catch (TokenizerLoadException e) { throw new RlSetupException($"reward model {folder}: cannot load its tokenizer to compare it with the policy's: {e.Message}"); }
        var differences = TokenizerDifferences(policyTokenizer, rewardTokenizer);
        if (differences.Count > 0)
            throw new RlSetupException($"reward model {folder} uses a different tokenizer from the policy ({string.Join("; ", differences)}): " +
                "it would score token ids it does not know. Train the reward model from the same SFT model");
        if (ModelRecord.Read(folder) is { } record && record.Template != policyTemplate.Name)
            throw new RlSetupException($"reward model {folder} was trained on text in the \"{record.Template}\" template (its {ModelRecord.FileName}) but the " +
                $"policy writes \"{policyTemplate.Name}\": it would score text formatted unlike its training data. Set the same template for both");
        if (config.VocabSize < policyTokenizer.VocabSize)
            throw new RlSetupException($"reward model {folder} has {config.VocabSize} token ids, fewer than the policy's tokenizer ({policyTokenizer.VocabSize})");
    }

    /// <summary>What differs between two tokenizers: vocabulary size, special tokens, chat template.</summary>
    public static IReadOnlyList<string> TokenizerDifferences(TextTokenizer a, TextTokenizer b)
    {
        var list = new List<string>();
        if (a.VocabSize != b.VocabSize) list.Add($"vocabulary {a.VocabSize} vs {b.VocabSize} ids");
        if (a.EosId != b.EosId || a.EosToken != b.EosToken) list.Add($"EOS {a.EosToken}={a.EosId} vs {b.EosToken}={b.EosId}");
        if (a.BosId != b.BosId) list.Add($"BOS {a.BosId} vs {b.BosId}");
        if (a.PadId != b.PadId) list.Add($"pad {a.PadId} vs {b.PadId}");
        if (a.ChatTemplate is not null && b.ChatTemplate is not null && a.ChatTemplate != b.ChatTemplate) list.Add("chat templates differ");
        return list;
    }




    private static T Track<T>(T item, List<IDisposable> list) where T : IDisposable
    {
        list.Add(item);
        return item;
    }

    private static string Shorten(string text) => text.Length > 80 ? text[..80] + "..." : text;
}
