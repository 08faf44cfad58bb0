using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Training;

public class GradientTests
{
    private static Dictionary<string, Tensor> Grads(IEnumerable<NamedParameter> ps) =>
        ps.ToDictionary(p => p.Name, p => { using var g = p.Parameter.grad!; return g.detach().clone(); });

    [Fact]
    public void Two_micro_batches_accumulate_to_the_gradient_of_one_batch_of_both()
    {
        using var task = new TinyLmTask { Dropout = 0 };
        int[] first = [0, 1], second = [2, 3, 4];   // 17 and 24 label tokens: unequal on purpose
        Assert.NotEqual(task.ItemsOf(first) * second.Length, task.ItemsOf(second) * first.Length);

        AccumulatedStep split, whole;
        Dictionary<string, Tensor> splitGrads, wholeGrads;
        using (var scope = NewDisposeScope())
        {
            split = GradientAccumulation.Accumulate(task, [task.Collate(first), task.Collate(second)]);
            splitGrads = Grads(task.Parameters);
            foreach (var g in splitGrads.Values) g.DetachFromDisposeScope();
        }
        foreach (var p in task.Parameters) p.Parameter.grad = null;
        using (var scope = NewDisposeScope())
        {
            whole = GradientAccumulation.Accumulate(task, [task.Collate([.. first, .. second])]);
            wholeGrads = Grads(task.Parameters);
            foreach (var g in wholeGrads.Values) g.DetachFromDisposeScope();
        }

        Assert.True(split.IsFinite && whole.IsFinite);
        Assert.Equal(whole.Items, split.Items);
        Assert.Equal(whole.Loss, split.Loss, 1e-5);
        Assert.Equal(whole.MetricSums[RlhfStudio.Engine.Jobs.MetricNames.MeanTokenAccuracy], split.MetricSums[RlhfStudio.Engine.Jobs.MetricNames.MeanTokenAccuracy]);
        foreach (var (name, g) in wholeGrads)
        {
            using var scale = g.abs().max();
            double diff = TestModels.MaxDiff(g, splitGrads[name]);
            Assert.True(diff <= 1e-5 * Math.Max(1e-3, scale.item<float>()), $"{name}: gradients differ by {diff}");
        }
        Assert.True(splitGrads.Values.Any(g => g.abs().max().item<float>() > 0), "no gradient at all");
        foreach (var g in splitGrads.Values.Concat(wholeGrads.Values)) g.Dispose();
    }

    [Fact]
    public void A_non_finite_micro_batch_stops_before_its_backward_and_names_it()
    {
        using var task = new TinyLmTask { Dropout = 0 };
        task.NaNAtCall.Add(2);
        using var scope = NewDisposeScope();
        var step = GradientAccumulation.Accumulate(task, [task.Collate([0]), task.Collate([1]), task.Collate([2])]);
        Assert.False(step.IsFinite);
        Assert.Contains("NaN in micro-batch 2 of 3", step.Problem);
    }

    [Fact]
    public void A_batch_with_nothing_to_learn_is_reported_not_divided_by_zero()
    {
        using var task = new TinyLmTask { Dropout = 0 };
        using var scope = NewDisposeScope();
        var empty = task.Collate([0]) with { Items = 0 };
        var step = GradientAccumulation.Accumulate(task, [empty]);
        Assert.False(step.IsFinite);
        Assert.Contains("nothing to learn", step.Problem);
    }

    private static NamedParameter WithGrad(string name, float[] grad)
    {
        var p = new Parameter(torch.zeros(grad.Length));
        using var g = torch.tensor(grad);
        p.grad = g;
        return new NamedParameter(name, p);
    }

    private static float[] GradOf(NamedParameter p)
    {
        using var g = p.Parameter.grad!;
        return g.data<float>().ToArray();
    }

    [Fact]
    public void Clipping_returns_the_pre_clip_norm_and_scales_to_the_threshold()
    {
        var a = WithGrad("a", [3f, 4f]);   // norm 5
        var b = WithGrad("b", [12f]);      // norm 12: total 13
        double norm = GradientClipping.ClipByTotalNorm([a, b], maxNorm: 6.5);
        Assert.Equal(13.0, norm, 5);
        double scale = 6.5 / (13 + 1e-6);
        Assert.Equal([(float)(3 * scale), (float)(4 * scale)], GradOf(a));
        Assert.Equal((float)(12 * scale), GradOf(b)[0], 5);
        Assert.Equal(6.5, GradientClipping.ClipByTotalNorm([a, b], maxNorm: 0), 4);
    }

    [Fact]
    public void Clipping_leaves_small_gradients_alone_and_zero_threshold_only_measures()
    {
        var a = WithGrad("a", [3f, 4f]);
        Assert.Equal(5.0, GradientClipping.ClipByTotalNorm([a], maxNorm: 100), 5);
        Assert.Equal([3f, 4f], GradOf(a));
        Assert.Equal(5.0, GradientClipping.ClipByTotalNorm([a], maxNorm: 0), 5);
        Assert.Equal([3f, 4f], GradOf(a));
    }

    [Fact]
    public void Clipping_matches_TorchSharps_clip_grad_norm()
    {
        var gen = new Generator(9);
        var mine = Enumerable.Range(0, 3).Select(i => new NamedParameter($"p{i}", new Parameter(torch.zeros(5 + i)))).ToList();
        var theirs = mine.Select(p => new Parameter(torch.zeros(p.Parameter.shape))).ToList();
        for (int i = 0; i < 3; i++)
        {
            using var g = torch.randn(mine[i].Parameter.shape, generator: gen) * 3;
            mine[i].Parameter.grad = g;
            theirs[i].grad = g.clone();
        }
        double norm = GradientClipping.ClipByTotalNorm(mine, 1.0);
        double reference = nn.utils.clip_grad_norm_(theirs, 1.0);
        Assert.Equal(reference, norm, 4);
        for (int i = 0; i < 3; i++)
        {
            using var g1 = mine[i].Parameter.grad!;
            using var g2 = theirs[i].grad!;
            Assert.True(TestModels.MaxDiff(g1, g2) < 1e-6);
        }
    }

    [Fact]
    public void A_non_finite_gradient_is_measured_and_nothing_is_scaled()
    {
        var a = WithGrad("a", [float.NaN, 1f]);
        var b = WithGrad("b", [5f]);
        Assert.True(double.IsNaN(GradientClipping.ClipByTotalNorm([a, b], 1.0)));
        Assert.Equal([5f], GradOf(b));
    }
}
