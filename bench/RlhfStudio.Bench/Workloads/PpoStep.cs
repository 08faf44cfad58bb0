using System.Diagnostics;
using System.Text.Json;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers.Rl;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>A full PPO step of the real trainer (PpoJob: rollout = sampling + policy/reference log-probabilities,
/// values and scores; then 4 PPO epochs over the rollout) on the suite's tiny config (vocabulary 8192) with the built-in
/// tokenizer and the arithmetic scorer: batch 8 of one arithmetic prompt (every batch has the same padded prompt length, reported as
/// "prompt tokens" and given to the PyTorch side), 128 new tokens at temperature 1 (a fresh model rarely samples EOS,
/// so rows run to the end), bf16 compute. The phase split comes from the trainer's own metrics (time/rollout_s,
/// time/optimize_s, time/generation_s); pure generation of the same prompts with the same settings
/// (RolloutSampler.Sample alone) is timed next to it. The first step is a warm-up. Three modes: the row's figure is the
/// best, a value head on the policy with log-probs and values from the sampling loop (what bench/pytorch measures, as
/// TRL's AutoModelForCausalLMWithValueHead); the phases add a separate value model (TRL's current PPOTrainer) with
/// log-probs from sampling, and the same recomputing the policy's log-probs by a forward (exact first ratio).</summary>
public static class PpoStep
{
    public const int Batch = 8, NewTokens = 128, Epochs = 4;

    /// <summary>The prompt of every row (one of the arithmetic task's forms, so the built-in scorer can check answers).</summary>
    public const string Prompt = "Sam has 58 apples and gets 25 more. How many apples does Sam have now?";

    /// <summary>The sampling loop of the sharedValueHead route (log-probabilities and values read per step) over pure
    /// generation, the two alternating in one process (best of each): with the same-step rollout / sampling ratio it
    /// gives rollout / pure generation without the drift of the machine's speed between separately timed runs.</summary>
    public const string SamplingOverPurePhase = "sampling with log-probs and values / pure generation, alternating in one process (best, x1000)";

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
            var (rollout, optimize, total, overSampling) = Steps(folder, modelFolder, prompts, dtype, repetitions, recomputeLogProbs: false);
            var (exactRollout, _, _, exactOverSampling) = Steps(folder, modelFolder, prompts, dtype, repetitions, recomputeLogProbs: true);
            var (sharedRollout, sharedOptimize, sharedTotal, sharedOverSampling) = Steps(folder, modelFolder, prompts, dtype, repetitions, recomputeLogProbs: false, sharedValueHead: true);
            var (generation, withExtras, promptTokens) = PureGeneration(Spec(modelFolder, prompts, dtype, repetitions + 1, recomputeLogProbs: false, sharedValueHead: true),
                repetitions);
            double best = sharedTotal.Min();
            return new Measurement(id, "steps/min", 60 / best, 60 / Median(sharedTotal), sharedTotal.Count, best * 1000,
                Notes: $"batch {Batch}, prompt {promptTokens} + {NewTokens} new tokens, {Epochs} epochs, value head on the policy; rollout " +
                       $"{sharedRollout.Min() * 1000:F0} ms = {sharedOverSampling.Min():F2}x its sampling; separate value model: step {total.Min() * 1000:F0} ms")
            {
                Phases = new Dictionary<string, double>
                {
                    [PromptTokensPhase] = promptTokens,
                    ["step (best), value head on the policy's trunk (sharedValueHead), log-probs and values from sampling"] = best * 1000,
                    ["  rollout (best), sharedValueHead"] = sharedRollout.Min() * 1000,
                    ["  optimise (best), sharedValueHead"] = sharedOptimize.Min() * 1000,
                    ["step (best), separate value model, policy log-probs from the sampling loop (TRL)"] = total.Min() * 1000,
                    ["  rollout (best), policy log-probs from the sampling loop (TRL)"] = rollout.Min() * 1000,
                    ["  optimise: 4 PPO epochs (best)"] = optimize.Min() * 1000,
                    ["  rollout (best), policy log-probs recomputed by a forward (recomputeLogProbs)"] = exactRollout.Min() * 1000,
                    ["pure generation, same prompts and settings (best)"] = generation * 1000,
                    [SamplingOverPurePhase] = withExtras / generation * 1000,
                    ["rollout / its own sampling part, same step (best, x1000): log-probs from sampling"] = overSampling.Min() * 1000,
                    ["rollout / its own sampling part, same step (best, x1000): recomputed log-probs"] = exactOverSampling.Min() * 1000,
                    ["rollout / its own sampling part, same step (best, x1000): sharedValueHead, from sampling"] = sharedOverSampling.Min() * 1000,
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

    /// <summary>Rollout, optimisation and total seconds of each step after the warm-up one, and each rollout's time over
    /// its own sampling part (measured in the same step, so immune to the machine's speed drifting between runs).</summary>
    private static (List<double> Rollout, List<double> Optimize, List<double> Total, List<double> OverSampling) Steps(string folder, string model, string prompts,
        ScalarType dtype, int repetitions, bool recomputeLogProbs, bool sharedValueHead = false)
    {
        var spec = Spec(model, prompts, dtype, repetitions + 1, recomputeLogProbs, sharedValueHead);
        var output = Path.Combine(folder, "run");
        try
        {
            var reporter = new MetricsReporter();
            var outcome = new PpoJob(spec).Run(new RunContext(spec, output, reporter, CancellationToken.None));
            if (outcome.State != RunEndState.Completed) throw new InvalidOperationException($"PPO run ended {outcome.State}: {outcome.Message}");
            var timed = reporter.Steps.Where(s => s.Key > 1).Select(s => s.Value).ToList();
            return (timed.Select(m => m[RlTrainer.RolloutSecondsMetric]).ToList(), timed.Select(m => m[RlTrainer.OptimizeSecondsMetric]).ToList(),
                timed.Select(m => m[RlTrainer.RolloutSecondsMetric] + m[RlTrainer.OptimizeSecondsMetric]).ToList(),
                timed.Select(m => m[RlTrainer.RolloutSecondsMetric] / m[RlTrainer.GenerationSecondsMetric]).ToList());
        }
        finally
        {
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
        }
    }

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

    /// <summary>Pure generation (RolloutSampler.Sample alone) on a fresh set of the same models, alternating with the
    /// sharedValueHead route's sampling loop (log-probabilities and value-head readouts): the best seconds of each, and
    /// the prompt length in tokens.</summary>
    private static (double Pure, double WithExtras, int PromptTokens) PureGeneration(PpoSpec spec, int repetitions)
    {
        var (models, prompts) = RlSetup.Build(spec, new MetricsReporter());
        using (models)
        {
            models.SetEvalMode();
            var eos = models.Tokenizer.EosId ?? throw new InvalidOperationException("the built-in tokenizer has no EOS");
            var settings = new RolloutSettings(spec.Sampling.Temperature, spec.Sampling.MaxNewTokens, [eos], models.Tokenizer.PadId ?? eos, Batch, spec.MissingEosPenalty);
            var batch = prompts.Prompts.Take(Batch).ToList();
            if (batch.Select(p => p.Ids.Count).Distinct().Count() != 1) throw new InvalidOperationException("the bench's prompts differ in length");
            double pure = double.MaxValue, withExtras = double.MaxValue;
            // At least 8 timed pairs (~0.15 s each): the difference is a few percent, the machine's noise as much.
            int rounds = Math.Max(8, repetitions);
            for (int i = 0; i <= rounds; i++)
                foreach (bool extras in new[] { false, true })
                {
                    var sw = Stopwatch.StartNew();
                    var sampled = RolloutSampler.Sample(models.Policy, batch, settings, seed: 7 + i, withLogProbs: extras, valueHead: extras ? models.ValueHead : null);
                    double seconds = sw.Elapsed.TotalSeconds;
                    if (i > 0)
                    {
                        if (extras) withExtras = Math.Min(withExtras, seconds);
                        else pure = Math.Min(pure, seconds);
                    }
                    sampled.Batch.Ids.Dispose();
                    sampled.Batch.AttentionMask.Dispose();
                    sampled.Real.Dispose();
                    sampled.LogProbs?.Dispose();
                    sampled.Values?.Dispose();
                    GC.Collect(0);
                }
            return (pure, withExtras, batch[0].Ids.Count);
        }
    }

    private sealed class MetricsReporter : IRunReporter
    {
        public SortedDictionary<long, IReadOnlyDictionary<string, double>> Steps { get; } = [];
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) => Steps[step] = values;
        public void Samples(long step, IReadOnlyList<SampleRow> rows) { }
        public void Checkpoint(CheckpointReport checkpoint) { }
        public void Progress(RunProgress progress) { }
        public void Event(RunEvent runEvent) { }
    }
}
