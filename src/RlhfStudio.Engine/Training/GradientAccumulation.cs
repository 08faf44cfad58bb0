using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Training;

/// <summary>The outcome of the forward/backward passes of one optimisation step.</summary>
/// <param name="Loss">Mean loss over every item of the step's micro-batches (what a single full batch would give).</param>
/// <param name="Problem">Null when every micro-batch gave a finite loss; otherwise why the step must not be applied
/// (the gradients are then incomplete and must be dropped).</param>
public sealed record AccumulatedStep(
    double Loss, long Items, long Tokens, IReadOnlyDictionary<string, double> MetricSums, string? Problem = null)
{
    public bool IsFinite => Problem is null;
}

/// <summary>Gradient accumulation normalised by item count, as transformers does since 4.46 (num_items_in_batch):
/// each micro-batch's summed loss is divided by the number of items in the WHOLE optimisation step, so the accumulated
/// gradient equals the gradient of one big batch's per-item mean, even when micro-batches hold different numbers of
/// label tokens. (Dividing each micro-batch mean by the accumulation count instead over-weights short micro-batches.)</summary>
public static class GradientAccumulation
{
    /// <summary>Runs forward and backward over <paramref name="microBatches"/>, adding into the parameters' gradients.
    /// Stops at the first micro-batch whose loss is not finite (before its backward) and reports it.</summary>
    public static AccumulatedStep Accumulate<TBatch>(ITrainingTask<TBatch> task, IReadOnlyList<MicroBatch<TBatch>> microBatches)
    {
        long items = microBatches.Sum(m => m.Items);
        long tokens = microBatches.Sum(m => m.Tokens);
        var metricSums = new Dictionary<string, double>(StringComparer.Ordinal);
        if (items <= 0)
            return new AccumulatedStep(double.NaN, 0, tokens, metricSums,
                "the batch has nothing to learn from (no item counts toward the loss, e.g. every label is masked)");

        double lossSum = 0;
        using var divisor = ((double)items).ToScalar();
        for (int i = 0; i < microBatches.Count; i++)
        {
            using var scope = NewDisposeScope();
            var result = task.Loss(microBatches[i].Data);
            double value = result.LossSum.to(ScalarType.Float64).item<double>();
            if (!double.IsFinite(value))
                return new AccumulatedStep(double.NaN, items, tokens, metricSums,
                    $"the loss is {Describe(value)} in micro-batch {i + 1} of {microBatches.Count}");
            result.LossSum.div(divisor).backward();
            lossSum += value;
            if (result.MetricSums is not null)
                foreach (var (name, v) in result.MetricSums)
                    metricSums[name] = metricSums.GetValueOrDefault(name) + v;
        }
        return new AccumulatedStep(lossSum / items, items, tokens, metricSums);
    }

    internal static string Describe(double value) =>
        double.IsNaN(value) ? "NaN" : double.IsPositiveInfinity(value) ? "+inf" : double.IsNegativeInfinity(value) ? "-inf" : value.ToString("G6");
}
