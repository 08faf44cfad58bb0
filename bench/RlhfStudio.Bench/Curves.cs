using System.Globalization;
using RlhfStudio.Bench.Workloads;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Bench;

/// <summary>--curves: does bf16 compute (fp32 master weights) train like fp32? The tiny model (batch 4 x 128 tokens, to
/// keep three 200-step runs within minutes on a shared 2-core machine) trains for N steps on a
/// learnable stream (a random sparse Markov chain: every token has 4 equally likely successors, so the best possible
/// loss is ln 4 = 1.386) in fp32 and in bf16 from the same initialisation and data, plus fp32 from another
/// initialisation as the yardstick of run-to-run noise. Losses are printed every 20 steps (mean of the last 20).</summary>
public static class Curves
{
    private const int Successors = 4, Every = 20;

    public static int Run(int steps)
    {
        var config = BenchConfig.Tiny with { Batch = 4, SequenceLength = 128 };
        Console.WriteLine($"loss curves: {config.Name} config, batch {config.Batch} x {config.SequenceLength}, AdamW lr 1e-3 wd 0.1, {steps} steps; " +
                          $"data: Markov chain with {Successors} successors per token (floor ln {Successors} = {Math.Log(Successors):F3})");
        var runs = new (string Label, ScalarType DType, long Seed)[] { ("fp32", ScalarType.Float32, 1), ("bf16", ScalarType.BFloat16, 1), ("fp32 seed 2", ScalarType.Float32, 2) };
        var curves = new List<double[]>();
        foreach (var (label, dtype, seed) in runs)
        {
            using var model = ModelPresets.Create(config.Preset, BenchConfig.Vocab, seed: seed);
            if (dtype != ScalarType.Float32) model.ComputeDType = dtype;
            using var trainer = new TrainingStep.Trainer(model, MarkovBatches(config, steps)) { LearningRate = 1e-3 };
            var losses = new double[steps];
            var sw = System.Diagnostics.Stopwatch.StartNew();
            for (int s = 0; s < steps; s++)
            {
                trainer.Step();
                losses[s] = trainer.LastLoss;
                if (s % 10 == 9) GC.Collect(0);
            }
            Console.Error.WriteLine($"  {label}: {steps} steps in {sw.Elapsed.TotalSeconds:F0} s, final loss {losses[^1]:F4}");
            curves.Add(losses);
        }
        var rows = new List<string[]>();
        for (int end = Every; end <= steps; end += Every)
        {
            double Mean(double[] c) => c.Skip(end - Every).Take(Every).Average();
            double f = Mean(curves[0]), b = Mean(curves[1]), f2 = Mean(curves[2]);
            rows.Add([end.ToString(CultureInfo.InvariantCulture), F(curves[0][end - 1]), F(curves[1][end - 1]), F(f), F(b), F(f2),
                Signed(b - f), Signed(f2 - f)]);
        }
        Report.PrintMarkdown(Console.Out, ["step", "fp32 loss", "bf16 loss", "fp32 mean(20)", "bf16 mean(20)", "fp32 seed 2 mean(20)", "bf16 - fp32", "seed 2 - seed 1 (fp32)"], rows);
        // Noise band: how far two fp32 runs from different initialisations drift apart (largest 20-step-mean gap over
        // the run); bf16 matches when its largest gap to fp32 from the same initialisation stays inside it.
        double Gap(double[] a, double[] b, int end) => Math.Abs(a.Skip(end - Every).Take(Every).Average() - b.Skip(end - Every).Take(Every).Average());
        var ends = Enumerable.Range(1, steps / Every).Select(i => i * Every).ToList();
        double bf16Gap = ends.Max(e => Gap(curves[1], curves[0], e)), seedGap = ends.Max(e => Gap(curves[2], curves[0], e));
        Console.WriteLine($"largest 20-step-mean gap: bf16 vs fp32 {bf16Gap:0.0000}; fp32 seed 2 vs seed 1 {seedGap:0.0000}: " +
                          (bf16Gap <= seedGap ? "bf16 compute matches fp32 within run-to-run noise" : "bf16 compute drifts from fp32 by more than run-to-run noise"));
        return 0;
    }

    private static string F(double x) => x.ToString("F4", CultureInfo.InvariantCulture);
    private static string Signed(double x) => x.ToString("+0.0000;-0.0000;0.0000", CultureInfo.InvariantCulture);

    /// <summary>One (B, T+1) batch per step from the chain; the successor table and the draws are seeded, so every run
    /// sees the same data.</summary>
    private static List<Tensor> MarkovBatches(BenchConfig config, int steps)
    {
        using var scope = NewDisposeScope();
        var gen = new torch.Generator(5);
        long rows = (long)steps * config.Batch, length = config.SequenceLength + 1;
        var successors = torch.randint(0, BenchConfig.Vocab, [BenchConfig.Vocab, Successors], generator: gen, dtype: ScalarType.Int64);
        var choices = torch.randint(0, Successors, [rows, length], generator: gen, dtype: ScalarType.Int64);
        var ids = torch.empty([rows, length], dtype: ScalarType.Int64);
        ids.select(1, 0).copy_(torch.randint(0, BenchConfig.Vocab, [rows], generator: gen, dtype: ScalarType.Int64));
        for (long t = 1; t < length; t++)
        {
            var previous = ids.select(1, t - 1);
            ids.select(1, t).copy_(successors.index_select(0, previous).gather(1, choices.select(1, t).unsqueeze(1)).squeeze(1));
        }
        return ids.split(config.Batch).Select(b => b.contiguous().DetachFromDisposeScope()).ToList();
    }
}
