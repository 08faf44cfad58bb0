using System.Diagnostics;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Trainers.Rl;
using static TorchSharp.torch;

namespace RlhfStudio.Bench.Workloads;

/// <summary>A full PPO step of the real trainer (PpoJob: rollout = sampling + policy/reference log-probabilities,
/// values and scores; then 4 PPO epochs over the rollout) on the "tiny" preset with the built-in tokenizer, arithmetic
/// prompts and scorer: batch 8, 128 new tokens at temperature 1 (a fresh model rarely samples EOS, so rows run to
/// the end), bf16 compute. The phase split comes from the trainer's own metrics (time/rollout_s, time/optimize_s);
/// pure generation of the same prompts with the same settings (RolloutSampler.Sample alone) is timed next to it, for
/// the rollout overhead. The first step is a warm-up. The run uses TRL's route for the policy's log-probabilities
/// (taken from the sampling loop); a second run with recomputeLogProbs (a forward more, exact first ratio) gives the
/// rollout of that mode too. No PyTorch counterpart: TRL is not installed here.</summary>
public static class PpoStep
{
    public const int Batch = 8, NewTokens = 128, Epochs = 4;

    public static Measurement Run(string id, ScalarType dtype, int repetitions)
    {
        var (rollout, optimize, total, overSampling) = Steps(dtype, repetitions, recomputeLogProbs: false);
        var (exactRollout, _, _, exactOverSampling) = Steps(dtype, repetitions, recomputeLogProbs: true);
        // A value head on the policy with TRL's route: log-probabilities and values from the sampling loop, so the rollout's
        // only forward is the reference's.
        var (sharedRollout, sharedOptimize, sharedTotal, sharedOverSampling) = Steps(dtype, repetitions, recomputeLogProbs: false, sharedValueHead: true);
        double generation = PureGeneration(Spec(dtype, repetitions + 1, recomputeLogProbs: false), repetitions);
        double best = total.Min();
        return new Measurement(id, "steps/min", 60 / best, 60 / Median(total), total.Count, best * 1000,
            Notes: $"batch {Batch}, {NewTokens} new tokens, {Epochs} epochs; rollout {rollout.Min() * 1000:F0} ms = {rollout.Min() / generation:F2}x pure generation " +
                   $"{generation * 1000:F0} ms (log-probs from sampling, TRL); recomputing them: {exactRollout.Min() * 1000:F0} ms = {exactRollout.Min() / generation:F2}x")
        {
            Phases = new Dictionary<string, double>
            {
                ["step (best)"] = best * 1000,
                ["rollout (best), policy log-probs from the sampling loop (TRL)"] = rollout.Min() * 1000,
                ["  pure generation, same prompts and settings (best)"] = generation * 1000,
                ["  scoring: reference log-probs, values, rewards (rollout - generation)"] = (rollout.Min() - generation) * 1000,
                ["rollout (best), policy log-probs recomputed by a forward (recomputeLogProbs)"] = exactRollout.Min() * 1000,
                ["optimise: 4 PPO epochs (best)"] = optimize.Min() * 1000,
                ["step (best), value head on the policy's trunk (sharedValueHead), log-probs and values from sampling"] = sharedTotal.Min() * 1000,
                ["  rollout (best), sharedValueHead"] = sharedRollout.Min() * 1000,
                ["  optimise (best), sharedValueHead"] = sharedOptimize.Min() * 1000,
                ["rollout / its own sampling part, same step (best, x1000): log-probs from sampling"] = overSampling.Min() * 1000,
                ["rollout / its own sampling part, same step (best, x1000): recomputed log-probs"] = exactOverSampling.Min() * 1000,
                ["rollout / its own sampling part, same step (best, x1000): sharedValueHead, from sampling"] = sharedOverSampling.Min() * 1000,
            },
        };
    }

    private static PpoSpec Spec(ScalarType dtype, int steps, bool recomputeLogProbs, bool sharedValueHead = false) =>
        (PpoSpec)RunSpec.FromJson($$"""
            {
              "method": "ppo", "name": "bench-ppo", "model": { "preset": "tiny" },
              "reward": { "builtin": "arithmetic" }, "dataset": { "builtin": "arithmetic" },
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
    private static (List<double> Rollout, List<double> Optimize, List<double> Total, List<double> OverSampling) Steps(ScalarType dtype, int repetitions, bool recomputeLogProbs,
        bool sharedValueHead = false)
    {
        int steps = repetitions + 1;
        var spec = Spec(dtype, steps, recomputeLogProbs, sharedValueHead);
        var folder = Path.Combine(Path.GetTempPath(), $"rlhfstudio-bench-ppo-{Environment.ProcessId}");
        try
        {
            var reporter = new MetricsReporter();
            var outcome = new PpoJob(spec).Run(new RunContext(spec, folder, reporter, CancellationToken.None));
            if (outcome.State != RunEndState.Completed) throw new InvalidOperationException($"PPO run ended {outcome.State}: {outcome.Message}");
            var timed = reporter.Steps.Where(s => s.Key > 1).Select(s => s.Value).ToList();
            return (timed.Select(m => m[RlTrainer.RolloutSecondsMetric]).ToList(), timed.Select(m => m[RlTrainer.OptimizeSecondsMetric]).ToList(),
                timed.Select(m => m[RlTrainer.RolloutSecondsMetric] + m[RlTrainer.OptimizeSecondsMetric]).ToList(),
                timed.Select(m => m[RlTrainer.RolloutSecondsMetric] / m[RlTrainer.GenerationSecondsMetric]).ToList());
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    private static double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);

    /// <summary>The first rollout's sampling alone, on a fresh set of the same models.</summary>
    private static double PureGeneration(PpoSpec spec, int repetitions)
    {
        var (models, prompts) = RlSetup.Build(spec, new MetricsReporter());
        using (models)
        {
            models.SetEvalMode();
            var eos = models.Tokenizer.EosId ?? throw new InvalidOperationException("the built-in tokenizer has no EOS");
            var settings = new RolloutSettings(spec.Sampling.Temperature, spec.Sampling.MaxNewTokens, [eos], models.Tokenizer.PadId ?? eos, Batch, spec.MissingEosPenalty);
            var batch = prompts.Prompts.Take(Batch).ToList();
            double best = double.MaxValue;
            for (int i = 0; i <= repetitions; i++)
            {
                var sw = Stopwatch.StartNew();
                var (sequences, real) = RolloutSampler.Sample(models.Policy, batch, settings, seed: 7 + i);
                if (i > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds);
                sequences.Ids.Dispose();
                sequences.AttentionMask.Dispose();
                real.Dispose();
                GC.Collect(0);
            }
            return best;
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
