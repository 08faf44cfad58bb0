using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers;
using RlhfStudio.Engine.Trainers.Rl;

namespace RlhfStudio.Cli.Commands;

/// <summary><c>eval arithmetic</c> (does a policy answer held-out questions?), <c>eval reward</c> (does a reward model
/// rank held-out pairs?), both on the built-in task's test split, which no training split contains, and <c>eval kl</c>
/// (how far has a tuned policy moved from its reference?).</summary>
internal static class EvalCommands
{
    public static CommandSpec Arithmetic { get; } = new("eval arithmetic", [], ["model", "prompts", "seed", "max-new-tokens", "template", "dtype", "show", "threads"], ["json"],
        "greedy answers to N held-out arithmetic questions: exact match (first number right) and mean true score",
        RunArithmetic);

    public static CommandSpec Reward { get; } = new("eval reward", [], ["model", "pairs", "seed", "max-length", "template", "dtype", "threads"], ["json"],
        "held-out pair accuracy (r_chosen > r_rejected) of a reward model on the built-in preference test split",
        RunReward);

    public static CommandSpec Kl { get; } = new("eval kl", [], ["model", "reference", "dataset", "prompts", "seed", "temperature", "max-new-tokens", "template", "dtype", "threads"], ["json"],
        "KL of a tuned policy from its reference on responses it samples for held-out prompts: the arithmetic test split, or " +
        "--dataset FILE's evaluation rows (JSONL/Parquet, any TRL format; TRL's objective/kl estimator)",
        RunKl);

    private static int RunArithmetic(Arguments args, CliOutput output)
    {
        var folder = CommandHelpers.ModelFolder(args.String("model") ?? throw new UsageException("--model DIR is required"));
        int count = args.Int("prompts", 200, min: 1);
        int seed = args.Int("seed", 42);
        int maxNew = args.Int("max-new-tokens", ArithmeticEvaluation.DefaultMaxNewTokens, min: 1);
        CommandHelpers.Threads(args);
        var tokenizer = TextTokenizer.Load(folder);
        using var model = ModelLoader.Load(folder, CommandHelpers.DType(args));
        var template = Template(args, tokenizer, folder, model);
        var questions = ArithmeticEvaluation.HeldOutQuestions(count, seed);
        var clock = Stopwatch.StartNew();
        var report = ArithmeticEvaluation.Run(model, tokenizer, template, questions, maxNew);
        clock.Stop();
        if (args.Flag("json"))
        {
            output.Out.WriteLine(new JsonObject
            {
                ["prompts"] = report.Count,
                ["exact_match"] = report.ExactMatch,
                ["true_score"] = report.MeanScore,
                ["seconds"] = clock.Elapsed.TotalSeconds,
            }.ToJsonString());
            return 0;
        }
        foreach (var s in report.Samples.Take(args.Int("show", 5, min: 0)))
            output.Out.WriteLine($"  {s.Question}  ->  {s.Completion.ReplaceLineEndings(" ")}  [{s.Score.ToString(CultureInfo.InvariantCulture)}]");
        output.Out.WriteLine($"exact match {Percent(report.ExactMatch)} ({report.Samples.Count(s => s.Correct)}/{report.Count}), mean true score " +
            $"{report.MeanScore.ToString("F3", CultureInfo.InvariantCulture)} on {report.Count} held-out questions (seed {seed}, greedy, template {template.Name}, " +
            $"{clock.Elapsed.TotalSeconds:F1} s)");
        return 0;
    }

    private static int RunReward(Arguments args, CliOutput output)
    {
        var folder = CommandHelpers.ModelFolder(args.String("model") ?? throw new UsageException("--model DIR is required"));
        int count = args.Int("pairs", 500, min: 1);
        int seed = args.Int("seed", 42);
        int maxLength = args.Int("max-length", 256, min: 8);
        CommandHelpers.Threads(args);
        var config = ModelLoader.ReadConfig(folder);
        if (config.Head != ModelHead.SequenceClassification)
            throw new ModelLoadException($"{folder}: is a causal language model ({config.Architectures.FirstOrDefault()}), not a reward model; " +
                "give the final/ folder of a reward run") { FilePath = folder };
        var tokenizer = TextTokenizer.Load(folder);
        using var model = ModelLoader.LoadScoreModel(folder, CommandHelpers.DType(args));
        if (model.NumLabels != 1) throw new ModelLoadException($"{folder}: has {model.NumLabels} labels; a reward model has one") { FilePath = folder };
        var template = Template(args, tokenizer, folder, model);
        var pairs = Dataset.Open(new DatasetRef { Builtin = BuiltinDatasets.Arithmetic }, TrainingMethod.Reward, seed)
            .Examples(DatasetPart.Eval).Take(count)
            .Select(e => RewardData.Tokenize((PreferenceExample)e, tokenizer, template, maxLength, out _)).ToList();
        var clock = Stopwatch.StartNew();
        var sequences = pairs.Select(p => (IReadOnlyList<int>)p.Chosen).Concat(pairs.Select(p => (IReadOnlyList<int>)p.Rejected)).ToList();
        var rewards = RewardScoring.Score(model, sequences, tokenizer.PadId ?? tokenizer.EosId ?? 0);
        clock.Stop();
        int n = pairs.Count, correct = 0;
        double margin = 0;
        for (int i = 0; i < n; i++)
        {
            if (rewards[i] > rewards[n + i]) correct++;
            margin += rewards[i] - rewards[n + i];
        }
        double accuracy = correct / (double)n;
        if (args.Flag("json"))
        {
            output.Out.WriteLine(new JsonObject { ["pairs"] = n, ["accuracy"] = accuracy, ["mean_margin"] = margin / n, ["seconds"] = clock.Elapsed.TotalSeconds }.ToJsonString());
            return 0;
        }
        output.Out.WriteLine($"pair accuracy {Percent(accuracy)} ({correct}/{n}), mean margin {(margin / n).ToString("F3", CultureInfo.InvariantCulture)} on {n} held-out " +
            $"preference pairs (seed {seed}, template {template.Name}, {clock.Elapsed.TotalSeconds:F1} s)");
        return 0;
    }

    private static int RunKl(Arguments args, CliOutput output)
    {
        var folder = CommandHelpers.ModelFolder(args.String("model") ?? throw new UsageException("--model DIR is required"));
        var referenceFolder = CommandHelpers.ModelFolder(args.String("reference") ?? throw new UsageException("--reference DIR (the SFT model) is required"));
        int count = args.Int("prompts", 200, min: 1);
        int seed = args.Int("seed", 42);
        double temperature = args.Double("temperature", 0.7);
        if (!(temperature > 0 && temperature <= 10)) throw new UsageException("--temperature must be above 0 and at most 10 (responses are sampled)");
        int maxNew = args.Int("max-new-tokens", 16, min: 1);
        CommandHelpers.Threads(args);
        var tokenizer = TextTokenizer.Load(folder);
        var dtype = CommandHelpers.DType(args);
        using var model = ModelLoader.Load(folder, dtype);
        using var reference = ModelLoader.Load(referenceFolder, dtype);
        var template = Template(args, tokenizer, folder, model);
        var eos = tokenizer.EosId ?? throw new UsageException($"{folder}: the tokenizer has no EOS token, so responses never end");
        var texts = args.String("dataset") is { } datasetPath
            ? Dataset.Open(new DatasetRef { Path = datasetPath }, TrainingMethod.Ppo, seed).Examples(DatasetPart.Eval).Take(count)
                .Select(e => DatasetFormats.PromptOf(e).ToString()).ToList()
            : ArithmeticEvaluation.HeldOutQuestions(count, seed);
        if (texts.Count == 0) throw new UsageException($"{args.String("dataset")}: no evaluation rows to take prompts from");
        var prompts = texts.Select(q => new RlPrompt(q, template.TokenizePrompt(tokenizer, q))).ToList();
        var settings = new RolloutSettings(temperature, maxNew, [eos], tokenizer.PadId ?? eos, ForwardBatchSize: 64, MissingEosPenalty: null);
        var clock = Stopwatch.StartNew();
        var report = PolicyDivergence.Measure(model, reference, prompts, settings, seed);
        clock.Stop();
        if (args.Flag("json"))
        {
            output.Out.WriteLine(new JsonObject
            {
                ["responses"] = report.Responses,
                ["kl"] = report.MeanKl,
                ["mean_response_tokens"] = report.MeanResponseTokens,
                ["seconds"] = clock.Elapsed.TotalSeconds,
            }.ToJsonString());
            return 0;
        }
        output.Out.WriteLine($"KL {report.MeanKl.ToString("F3", CultureInfo.InvariantCulture)} nats per response (sum of log pi - log ref over its tokens, " +
            $"mean of {report.Responses} responses sampled at temperature {temperature.ToString(CultureInfo.InvariantCulture)}, " +
            $"{report.MeanResponseTokens.ToString("F1", CultureInfo.InvariantCulture)} tokens each; seed {seed}, template {template.Name}, {clock.Elapsed.TotalSeconds:F1} s)");
        return 0;
    }

    private static string Percent(double fraction) => (100 * fraction).ToString("F1", CultureInfo.InvariantCulture) + "%";

    private static PromptTemplate Template(Arguments args, TextTokenizer tokenizer, string folder, TransformerModel model)
    {
        var name = args.String("template");
        if (name is not null && !PromptTemplateNames.All.Contains(name))
            throw new UsageException($"unknown template \"{name}\" (templates: {string.Join(", ", PromptTemplateNames.All)})");
        return ModelSetup.ChooseTemplate(name, tokenizer, folder, model.Config.ModelType);
    }
}
