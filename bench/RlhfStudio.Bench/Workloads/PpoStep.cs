using System.Diagnostics;
using System.Text.Json;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers.Rl;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>A full PPO step of the real trainer (PpoJob) on the suite's tiny config (vocabulary 8192) with the built-in
/// tokenizer and the arithmetic scorer: batch 8 of one arithmetic prompt (every batch has the same padded prompt length,
/// reported as "prompt tokens" and given to the PyTorch side), 128 new tokens at temperature 1 (a fresh model rarely
/// samples EOS, so rows run to the end), bf16 compute. The phase split is the and comes from the trainer's own
/// metrics (time/*): rollout (the sampling loop, with the log-probabilities and values it reads when they are taken
/// there), the policy's own forward when log-probabilities are recomputed, the reference pass, a separate value model's
/// pass, scoring, then the optimisation (advantages and 4 PPO epochs). Pure generation of the same prompts with the same
/// settings (RolloutSampler.Sample alone) is timed next to it, alternating with the rollout's sampling loop. The first
/// step is a warm-up. Three modes: the row's figure is the best, a value head on the policy with log-probs and values
/// from the sampling loop (what bench/pytorch measures, as TRL's AutoModelForCausalLMWithValueHead); the phases add a
/// separate value model (TRL's current PPOTrainer) with log-probs from sampling, and the same recomputing the policy's
/// log-probs by a forward (exact first ratio).</summary>
public static class PpoStep
{
    public const int Batch = 8, NewTokens = 128, Epochs = 4;

    /// <summary>The prompt of every row (one of the arithmetic task's forms, so the built-in scorer can check answers).</summary>
    public const string Prompt = "Sam has 58 apples and gets 25 more. How many apples does Sam have now?";

    /// <summary>The sampling loop of the sharedValueHead route (log-probabilities and values read per step: the rollout
    /// phase) over pure generation, the two alternating in one process (best of each), so without the drift of the
    /// machine's speed between separately timed runs.</summary>
    public const string SamplingOverPurePhase = "sampling with log-probs and values / pure generation, alternating in one process (best, x1000)";

    /// <summary>The trainer's rollout phase (row's route, best of its steps) over pure generation timed after each of those
    /// steps (best): the verdict.</summary>
    public const string RolloutOverPurePhase = "rollout phase in the trainer / pure generation after each of its steps (best over best, x1000)";

    /// <summary>The rollout phase (the sampling loop with the log-probabilities and values it reads) of the row's route.</summary>
    public const string SharedRolloutPhase = "  rollout: the sampling loop with log-probs and values (best), sharedValueHead";
    public const string SharedReferencePhase = "  reference pass (best), sharedValueHead";
    /// <summary>Everything before the optimisation (rollout, reference pass, scoring) over the rollout phase, same step.</summary>
    public const string ExperienceOverRolloutPhase = "experience (rollout + reference + scoring) / its rollout phase, same step (best, x1000): sharedValueHead";

    /// <summary>The phase holding the padded prompt length, read by the runner for the PyTorch side.</summary>
    public const string PromptTokensPhase = "prompt tokens (every row)";

    public static Measurement Run(string id, ScalarType dtype, int repetitions)
    {
        var folder = Path.Combine(Path.GetTempPath(), $"rlhfstudio-bench-ppo-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        try
        {
            var prompts = Path.Combine(folder, "prompts.jsonl");
            File.WriteAllLines(prompts, Enumerable.Repeat(JsonSerializer.Serialize(new { prompt = Prompt }), 64));
            var modelFolder = WriteModel(Path.Combine(folder, "tiny-8k"));
            var separate = Steps(folder, modelFolder, prompts, dtype, repetitions, recomputeLogProbs: false);
            var exact = Steps(folder, modelFolder, prompts, dtype, repetitions, recomputeLogProbs: true);
            using var pure = new PureGeneration(Spec(modelFolder, prompts, dtype, repetitions + 1, recomputeLogProbs: false, sharedValueHead: true));
            // The row's route, with pure generation timed after every step (right after its optimisation, as the next
            // rollout runs): at least 8 steps, so that the rollout phase and pure generation each get 8 chances at a best
            // within the same seconds of the machine's speed.
            var afterSteps = new List<double>();
            var shared = Steps(folder, modelFolder, prompts, dtype, Math.Max(8, repetitions), recomputeLogProbs: false, sharedValueHead: true,
                afterStep: step => { if (step > 1) afterSteps.Add(pure.Seconds(extras: false, seed: (int)step)); });
            var (generation, withExtras) = pure.Alternating(repetitions);
            int promptTokens = pure.PromptTokens;
            double rolloutOverPure = Best(shared, RlTrainer.RolloutSecondsMetric) / (afterSteps.Min() * 1000);
            // The row's figures from as many steps as the PyTorch side times (the extra ones serve the rollout verdict only).
            var rowSteps = shared.Take(repetitions).ToList();
            var sharedTotal = rowSteps.Select(StepSeconds).ToList();
            double best = sharedTotal.Min();
            double Best(List<IReadOnlyDictionary<string, double>> steps, string metric) => steps.Min(m => m[metric]) * 1000;
            // Same-step quotients (immune to the machine's speed drifting between separately timed runs).
            double OverRollout(List<IReadOnlyDictionary<string, double>> steps) =>
                steps.Min(m => m[RlTrainer.ExperienceSecondsMetric] / m[RlTrainer.RolloutSecondsMetric]) * 1000;
            return new Measurement(id, "steps/min", 60 / best, 60 / Median(sharedTotal), sharedTotal.Count, best * 1000,
                Notes: $"batch {Batch}, prompt {promptTokens} + {NewTokens} new tokens, {Epochs} epochs, value head on the policy; rollout " +
                       $"{Best(rowSteps, RlTrainer.RolloutSecondsMetric):F0} ms, reference pass {Best(rowSteps, RlTrainer.ReferenceSecondsMetric):F0} ms; " +
                       $"separate value model: step {separate.Min(StepSeconds) * 1000:F0} ms")
            {
                Phases = new Dictionary<string, double>
                {
                    [PromptTokensPhase] = promptTokens,
                    ["step (best), value head on the policy's trunk (sharedValueHead), log-probs and values from sampling"] = best * 1000,
                    [SharedRolloutPhase] = Best(rowSteps, RlTrainer.RolloutSecondsMetric),
                    [SharedReferencePhase] = Best(rowSteps, RlTrainer.ReferenceSecondsMetric),
                    ["  scoring (best), sharedValueHead"] = Best(rowSteps, RlTrainer.ScoringSecondsMetric),
                    ["  optimise: advantages and 4 PPO epochs (best), sharedValueHead"] = Best(rowSteps, RlTrainer.OptimizeSecondsMetric),
                    ["step (best), separate value model, policy log-probs from the sampling loop (TRL)"] = separate.Min(StepSeconds) * 1000,
                    ["  rollout (best), separate value model"] = Best(separate, RlTrainer.RolloutSecondsMetric),
                    ["  reference pass (best), separate value model"] = Best(separate, RlTrainer.ReferenceSecondsMetric),
                    ["  value model pass (best), separate value model"] = Best(separate, RlTrainer.ValueSecondsMetric),
                    ["  optimise (best), separate value model"] = Best(separate, RlTrainer.OptimizeSecondsMetric),
                    ["  policy forward recomputing log-probs (best), recomputeLogProbs"] = Best(exact, RlTrainer.PolicyForwardSecondsMetric),
                    ["pure generation, same prompts and settings (best)"] = generation * 1000,
                    [SamplingOverPurePhase] = withExtras / generation * 1000,
                    ["rollout phase in the trainer, best of all the row's route's steps"] = Best(shared, RlTrainer.RolloutSecondsMetric),
                    ["pure generation after each of those steps (best)"] = afterSteps.Min() * 1000,
                    [RolloutOverPurePhase] = rolloutOverPure * 1000,
                    [ExperienceOverRolloutPhase] = OverRollout(rowSteps),
                    ["experience / its rollout phase, same step (best, x1000): separate value model"] = OverRollout(separate),
                    ["experience / its rollout phase, same step (best, x1000): recomputed log-probs"] = OverRollout(exact),
                },
            };
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    private static PpoSpec Spec(string model, string prompts, ScalarType dtype, int steps, bool recomputeLogProbs, bool sharedValueHead = false) =>
        (PpoSpec)RunSpec.FromJson($$"""
            {
              "method": "ppo", "name": "bench-ppo", "model": { "path": {{JsonSerializer.Serialize(model)}} },
              "reward": { "builtin": "arithmetic" }, "dataset": { "path": {{JsonSerializer.Serialize(prompts)}} },
              "precision": "{{(dtype == ScalarType.BFloat16 ? "bf16" : "fp32")}}", "seed": 42, "maxLength": 256,
              "training": { "learningRate": 1e-5, "maxSteps": {{steps}}, "batchSize": {{Batch}}, "maxGradNorm": 1.0 },
              "adapter": { "kind": "full" },
              "sampling": { "maxNewTokens": {{NewTokens}}, "temperature": 1.0 },
              "numPpoEpochs": {{Epochs}}, "numMiniBatches": 1, "sampleSteps": 1000, "recomputeLogProbs": {{(recomputeLogProbs ? "true" : "false")}}, "sharedValueHead": {{(sharedValueHead ? "true" : "false")}},
              "checkpoints": { "saveSteps": 0, "keepLast": 1 }
            }
            """);

    /// <summary>The trainer's metrics of each step after the warm-up one.</summary>
    private static List<IReadOnlyDictionary<string, double>> Steps(string folder, string model, string prompts,
        ScalarType dtype, int repetitions, bool recomputeLogProbs, bool sharedValueHead = false, Action<long>? afterStep = null)
    {
        var spec = Spec(model, prompts, dtype, repetitions + 1, recomputeLogProbs, sharedValueHead);
        var output = Path.Combine(folder, "run");
        try
        {
            var reporter = new MetricsReporter(afterStep);
            var outcome = new PpoJob(spec).Run(new RunContext(spec, output, reporter, CancellationToken.None));
            if (outcome.State != RunEndState.Completed) throw new InvalidOperationException($"PPO run ended {outcome.State}: {outcome.Message}");
            return reporter.Steps.Where(s => s.Key > 1).Select(s => s.Value).ToList();
        }
        finally
        {
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
        }
    }

    private static double StepSeconds(IReadOnlyDictionary<string, double> m) => m[RlTrainer.ExperienceSecondsMetric] + m[RlTrainer.OptimizeSecondsMetric];

    /// <summary>The suite's tiny config (vocabulary 8192, as the training and generation rows and bench/pytorch) as a model
    /// folder with the built-in tokenizer's files: its 382 ids are the first rows of the embedding, the rest are never
    /// produced by tokenising but can be sampled (decoding skips them, as transformers' does).</summary>
    private static string WriteModel(string folder)
    {
        var tokenizer = TextTokenizer.BuiltIn();
        using (var model = ModelPresets.Create(BenchConfig.Tiny.Preset, BenchConfig.Vocab, seed: 42, bosTokenId: tokenizer.BosId,
                   eosTokenIds: tokenizer.EosId is int eos ? [eos] : [], padTokenId: tokenizer.PadId))
            ModelSaver.Save(model, folder);
        tokenizer.Save(folder);
        return folder;
    }

    private static double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);

    /// <summary>Pure generation (RolloutSampler.Sample alone) on a fresh set of the same models, and the sharedValueHead
    /// route's sampling loop (log-probabilities and value-head readouts) on them.</summary>
    private sealed class PureGeneration : IDisposable
    {
        private readonly RlModels _models;
        private readonly RolloutSettings _settings;
        private readonly List<RlPrompt> _batch;

        public PureGeneration(PpoSpec spec)
        {
            PromptSet prompts;
            (_models, prompts) = RlSetup.Build(spec, new MetricsReporter());
            _models.SetEvalMode();
            var eos = _models.Tokenizer.EosId ?? throw new InvalidOperationException("the built-in tokenizer has no EOS");
            _settings = new RolloutSettings(spec.Sampling.Temperature, spec.Sampling.MaxNewTokens, [eos], _models.Tokenizer.PadId ?? eos, Batch, spec.MissingEosPenalty);
            _batch = prompts.Prompts.Take(Batch).ToList();
            if (_batch.Select(p => p.Ids.Count).Distinct().Count() != 1) throw new InvalidOperationException("the bench's prompts differ in length");
        }

        public int PromptTokens => _batch[0].Ids.Count;

        /// <summary>Seconds of one sampling run, with the log-probabilities and values when <paramref name="extras"/>.</summary>
        public double Seconds(bool extras, int seed)
        {
            var sw = Stopwatch.StartNew();
            var sampled = RolloutSampler.Sample(_models.Policy, _batch, _settings, seed: 7 + seed, withLogProbs: extras, valueHead: extras ? _models.ValueHead : null);
            double seconds = sw.Elapsed.TotalSeconds;
            sampled.Batch.Ids.Dispose();
            sampled.Batch.AttentionMask.Dispose();
            sampled.Real.Dispose();
            sampled.LogProbs?.Dispose();
            sampled.Values?.Dispose();
            GC.Collect(0);
            return seconds;
        }

        /// <summary>Pure generation and the sampling loop with log-probabilities and values alternating (after one
        /// untimed pair): the best seconds of each.</summary>
        public (double Pure, double WithExtras) Alternating(int repetitions)
        {
            double pure = double.MaxValue, withExtras = double.MaxValue;
            // At least 8 timed pairs (~0.15 s each): the difference is a few percent, the machine's noise as much.
            int rounds = Math.Max(8, repetitions);
            for (int i = 0; i <= rounds; i++)
                foreach (bool extras in new[] { false, true })
                {
                    double seconds = Seconds(extras, i);
                    if (i == 0) continue;
                    if (extras) withExtras = Math.Min(withExtras, seconds);
                    else pure = Math.Min(pure, seconds);
                }
            return (pure, withExtras);
        }

        public void Dispose() => _models.Dispose();
    }

    /// <summary>Keeps each step's metrics; <paramref name="afterStep"/> runs when a step's metrics arrive (on the
    /// trainer's thread, before its next step).</summary>
    private sealed class MetricsReporter(Action<long>? afterStep = null) : IRunReporter
    {
        public SortedDictionary<long, IReadOnlyDictionary<string, double>> Steps { get; } = [];
        public void Metrics(long step, IReadOnlyDictionary<string, double> values)
        {
            Steps[step] = values;
            afterStep?.Invoke(step);
        }
        public void Samples(long step, IReadOnlyList<SampleRow> rows) { }
        public void Checkpoint(CheckpointReport checkpoint) { }
        public void Progress(RunProgress progress) { }
        public void Event(RunEvent runEvent) { }
    }
}
