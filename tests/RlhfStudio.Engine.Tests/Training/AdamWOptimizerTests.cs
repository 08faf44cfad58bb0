using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Training;

public class AdamWOptimizerTests
{
    private static NamedParameter Param(string name, float[] values, long[] shape) =>
        new(name, new Parameter(torch.tensor(values, shape)));

    private static void SetGrad(NamedParameter p, float[] values)
    {
        using var g = torch.tensor(values, p.Parameter.shape);
        p.Parameter.grad = g;
    }

    private static float[] Values(NamedParameter p) => p.Parameter.detach().cpu().to(ScalarType.Float32).data<float>().ToArray();

    // PyTorch AdamW written out in doubles, one element at a time.
    private static double[] HandAdamW(double[] p, double[][] grads, double lr, double wd, double b1 = 0.9, double b2 = 0.999, double eps = 1e-8)
    {
        var x = (double[])p.Clone();
        var m = new double[x.Length];
        var v = new double[x.Length];
        for (int t = 1; t <= grads.Length; t++)
            for (int i = 0; i < x.Length; i++)
            {
                double g = grads[t - 1][i];
                x[i] *= 1 - lr * wd;
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                double mHat = m[i] / (1 - Math.Pow(b1, t));
                double denom = Math.Sqrt(v[i]) / Math.Sqrt(1 - Math.Pow(b2, t)) + eps;
                x[i] -= lr * mHat / denom;
            }
        return x;
    }

    [Fact]
    public void Two_steps_match_a_hand_computation_with_weight_decay_only_on_the_weight()
    {
        var weight = Param("layer.weight", [1.0f, -2.0f], [1, 2]);
        var bias = Param("layer.bias", [0.5f, 0.25f], [2]);
        using var opt = new AdamWOptimizer([weight, bias], weightDecay: 0.1);
        Assert.True(opt.IsDecayed("layer.weight"));
        Assert.False(opt.IsDecayed("layer.bias"));

        double[][] weightGrads = [[0.1, -0.2], [0.05, 0.3]];
        double[][] biasGrads = [[0.3, 0.4], [-0.1, 0.2]];
        for (int t = 0; t < 2; t++)
        {
            SetGrad(weight, weightGrads[t].Select(g => (float)g).ToArray());
            SetGrad(bias, biasGrads[t].Select(g => (float)g).ToArray());
            opt.Step(0.1);
        }

        var expectedWeight = HandAdamW([1.0, -2.0], weightGrads, lr: 0.1, wd: 0.1);
        var expectedBias = HandAdamW([0.5, 0.25], biasGrads, lr: 0.1, wd: 0.0);
        var gotWeight = Values(weight);
        var gotBias = Values(bias);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(expectedWeight[i], gotWeight[i], 5e-6);
            Assert.Equal(expectedBias[i], gotBias[i], 5e-6);
        }
        // Decay made a difference: without it the weight would be elsewhere.
        Assert.NotEqual(HandAdamW([1.0, -2.0], weightGrads, lr: 0.1, wd: 0.0)[0], gotWeight[0], 1e-4);
        Assert.Equal(2, opt.StepOf("layer.weight"));
    }

    [Fact]
    public void Matches_TorchSharps_AdamW_with_the_same_parameter_groups()
    {
        var gen = new Generator(3);
        var mine = new[] { ("a.weight", new long[] { 3, 4 }), ("a.bias", new long[] { 4 }), ("norm.weight", new long[] { 4 }) }
            .Select(x => new NamedParameter(x.Item1, new Parameter(torch.randn(x.Item2, generator: gen)))).ToList();
        var theirs = mine.Select(p => new Parameter(p.Parameter.detach().clone())).ToList();
        using var opt = new AdamWOptimizer(mine, beta1: 0.8, beta2: 0.99, epsilon: 1e-6, weightDecay: 0.05);
        var reference = torch.optim.AdamW(
            [
                new TorchSharp.Modules.AdamW.ParamGroup(theirs.Take(1), new TorchSharp.Modules.AdamW.Options { weight_decay = 0.05 }),
                new TorchSharp.Modules.AdamW.ParamGroup(theirs.Skip(1), new TorchSharp.Modules.AdamW.Options { weight_decay = 0.0 }),
            ], lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6);
        for (int step = 0; step < 4; step++)
        {
            for (int i = 0; i < mine.Count; i++)
            {
                using var g = torch.randn(mine[i].Parameter.shape, generator: gen);
                mine[i].Parameter.grad = g;
                theirs[i].grad = g.clone();
            }
            opt.Step(0.01);
            reference.step();
        }
        for (int i = 0; i < mine.Count; i++)
            Assert.True(TestModels.MaxDiff(mine[i].Parameter, theirs[i]) < 1e-6, $"{mine[i].Name} differs by {TestModels.MaxDiff(mine[i].Parameter, theirs[i])}");
    }

    [Fact]
    public void Fp32_parameters_take_libtorchs_fused_kernel()
    {
        // The hand computation and the TorchSharp comparison above run through it; a script that stops compiling (it
        // once lacked its final newline, and every step fell back to nine elementwise ops, 3-4x slower) fails here.
        Assert.True(AdamWOptimizer.UsesFusedKernel);
    }

    [Fact]
    public void Parameters_without_gradients_are_not_touched()
    {
        var a = Param("a.weight", [1f, 2f], [1, 2]);
        var b = Param("b.weight", [3f, 4f], [1, 2]);
        using var opt = new AdamWOptimizer([a, b], weightDecay: 0.5);
        SetGrad(a, [1f, 1f]);
        opt.Step(0.1);
        Assert.Equal([3f, 4f], Values(b));
        Assert.Equal(0, opt.StepOf("b.weight"));
        Assert.NotEqual(1f, Values(a)[0]);
    }

    [Fact]
    public void A_learning_rate_scale_multiplies_only_its_parameters_step()
    {
        // Adam's first step moves every element by lr (m / sqrt(v) = g / |g|): 0.01 for a, 0.1 for b with scale 10.
        var a = Param("a.weight", [1f, 2f], [1, 2]);
        var plain = Param("b.weight", [1f, 2f], [1, 2]);
        var b = plain with { LearningRateScale = 10 };
        using var opt = new AdamWOptimizer([a, b]);
        SetGrad(a, [1f, -1f]);
        SetGrad(b, [1f, -1f]);
        opt.Step(0.01);
        Assert.Equal(0.99f, Values(a)[0], 5);
        Assert.Equal(2.01f, Values(a)[1], 5);
        Assert.Equal(0.9f, Values(b)[0], 5);
        Assert.Equal(2.1f, Values(b)[1], 5);
    }

    [Fact]
    public void ZeroGrad_drops_the_gradients()
    {
        var a = Param("a.weight", [1f, 2f], [1, 2]);
        using var opt = new AdamWOptimizer([a]);
        SetGrad(a, [1f, 1f]);
        opt.ZeroGrad();
        using var g = a.Parameter.grad;
        Assert.Null(g);
    }

    [Fact]
    public void Saved_state_loads_by_name_into_new_parameters_and_continues_identically()
    {
        using var dir = new TempDir();
        float[] start = [0.3f, -0.7f, 1.1f, 0.2f];
        var first = new[] { Param("x.weight", start, [2, 2]), Param("x.bias", [0.1f, 0.2f], [2]) };
        using var opt = new AdamWOptimizer(first, weightDecay: 0.1);
        float[][] grads = [[0.1f, 0.2f, -0.3f, 0.4f], [0.5f, -0.1f, 0.05f, 0.2f], [-0.2f, 0.3f, 0.1f, 0.0f]];
        SetGrad(first[0], grads[0]);
        SetGrad(first[1], [1f, -1f]);
        opt.Step(0.05);
        opt.Save(dir.Path);

        // Fresh parameters (listed in another order) with the same values, and a fresh optimiser loading the state.
        var second = new[] { Param("x.bias", Values(first[1]), [2]), Param("x.weight", Values(first[0]), [2, 2]) };
        using var restored = new AdamWOptimizer(second, weightDecay: 0.1);
        restored.Load(dir.Path);
        Assert.Equal(1, restored.StepOf("x.weight"));
        for (int t = 1; t < 3; t++)
        {
            SetGrad(first[0], grads[t]);
            SetGrad(second[1], grads[t]);
            opt.Step(0.05);
            restored.Step(0.05);
        }
        Assert.Equal(Values(first[0]), Values(second[1]));
    }

    [Fact]
    public void Loading_state_of_other_parameters_is_refused_with_their_names()
    {
        using var dir = new TempDir();
        var a = Param("a.weight", [1f, 2f], [1, 2]);
        using (var opt = new AdamWOptimizer([a]))
        {
            SetGrad(a, [1f, 1f]);
            opt.Step(0.1);
            opt.Save(dir.Path);
        }
        using var other = new AdamWOptimizer([Param("b.weight", [1f, 2f], [1, 2])]);
        var e = Assert.Throws<CheckpointException>(() => { other.Load(dir.Path); });
        Assert.Contains("a.weight", e.Message);
    }

    [Fact]
    public void Bf16_parameters_keep_fp32_moments_and_are_updated_in_fp32()
    {
        using var dir = new TempDir();
        var p = new NamedParameter("w.weight", new Parameter(torch.tensor(new float[] { 1f, 2f }, [1, 2]).to(ScalarType.BFloat16)));
        using var opt = new AdamWOptimizer([p]);
        using (var g = torch.tensor(new float[] { 0.5f, -0.5f }, [1, 2]).to(ScalarType.BFloat16)) p.Parameter.grad = g;
        opt.Step(0.01);
        Assert.Equal(ScalarType.BFloat16, p.Parameter.dtype);
        var got = Values(p);
        Assert.Equal(0.99f, got[0], 0.004f);   // bf16 spacing near 1 is 2^-7
        Assert.Equal(2.01f, got[1], 0.008f);
        opt.Save(dir.Path);
        using var file = RlhfStudio.Engine.IO.SafeTensorsFile.Open(Path.Combine(dir.Path, AdamWOptimizer.StateFileName));
        Assert.Equal(ScalarType.Float32, file.Info("exp_avg.w.weight").DType);
        Assert.Equal(ScalarType.Float32, file.Info("exp_avg_sq.w.weight").DType);
    }

    [Theory]
    [InlineData("model.layers.0.self_attn.q_proj.weight", 2, true)]
    [InlineData("model.embed_tokens.weight", 2, true)]
    [InlineData("score.weight", 2, true)]
    [InlineData("model.layers.0.input_layernorm.weight", 1, false)]
    [InlineData("model.norm.weight", 1, false)]
    [InlineData("model.layers.3.self_attn.q_proj.bias", 1, false)]
    [InlineData("transformer.h.0.ln_1.weight", 1, false)]
    [InlineData("transformer.h.0.attn.c_attn.bias", 1, false)]
    [InlineData("encoder.final_layer_norm.weight", 2, false)]   // matched by name even if not 1-D
    [InlineData("some.LayerNorm.weight", 2, false)]
    [InlineData("normal_proj.weight", 2, true)]                  // "norm" only as a whole name component
    public void Weight_decay_groups_follow_transformers(string name, long dims, bool decayed) =>
        Assert.Equal(decayed, ParameterGroups.IsDecayed(name, dims));
}
