// Numeric references. transformers is not installable here, so the reference is the HF formulas written out
// by hand with plain tensor ops (mm, softmax, elementwise), independent of the module code: rotary tables are
// computed in C# doubles, attention is an explicit softmax with an explicit causal mask, head sharing (GQA) is
// done by indexing, and GPT-2's Conv1D is a plain x @ W + b.
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using static RlhfStudio.Engine.Tests.Models.TestModels;

namespace RlhfStudio.Engine.Tests.Models;

public class ReferenceTests
{
    private static Tensor CausalSoftmaxAttention(Tensor q, Tensor k, Tensor v)   // (T, hs) each
    {
        long t = q.shape[0];
        var scores = torch.mm(q, k.t()) / Math.Sqrt(q.shape[1]);
        var future = torch.ones(t, t, dtype: ScalarType.Bool).triu(1);
        scores = scores.masked_fill(future, double.NegativeInfinity);
        return torch.mm(scores.softmax(-1), v);
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void One_llama_layer_matches_the_hand_computed_hugging_face_formulas(string modelType)
    {
        using var scope = NewDisposeScope();
        var config = Llama(modelType, kvHeads: 2, layers: 1);   // 4 query heads share 2 kv heads; qwen2 adds q/k/v biases
        using var model = RandomCausal(config, seed: 11);
        var w = model.state_dict();
        using var noGrad = no_grad();
        var ids = RandomIds(1, 6, seed: 12);
        long T = 6, nh = 4, nkv = 2, hs = 8;
        double eps = config.NormEps;

        Tensor Rms(Tensor x, Tensor weight) => weight * (x / (x.pow(2).mean([-1], keepdim: true) + eps).sqrt());
        Tensor Lin(Tensor x, string name) =>
            w.TryGetValue(name + ".bias", out var b) ? torch.mm(x, w[name + ".weight"].t()) + b : torch.mm(x, w[name + ".weight"].t());

        // Rotary tables in double precision: angle(t, i) = t / 10000^(2i/hs), duplicated across the two halves.
        var cosArr = new float[T * hs];
        var sinArr = new float[T * hs];
        for (int t = 0; t < T; t++)
            for (int i = 0; i < hs; i++)
            {
                double angle = t / Math.Pow(10000, 2.0 * (i % (hs / 2)) / hs);
                cosArr[t * hs + i] = (float)Math.Cos(angle);
                sinArr[t * hs + i] = (float)Math.Sin(angle);
            }
        var cos = torch.tensor(cosArr, [T, hs]);
        var sin = torch.tensor(sinArr, [T, hs]);
        Tensor Rope(Tensor x) => x * cos + torch.cat([-x[.., (int)(hs / 2)..], x[.., ..(int)(hs / 2)]], 1) * sin;

        var x0 = w["model.embed_tokens.weight"].index_select(0, ids[0]);                 // (T, C)
        var h = Rms(x0, w["model.layers.0.input_layernorm.weight"]);
        var q = Lin(h, "model.layers.0.self_attn.q_proj");
        var k = Lin(h, "model.layers.0.self_attn.k_proj");
        var v = Lin(h, "model.layers.0.self_attn.v_proj");
        var heads = new List<Tensor>();
        for (long head = 0; head < nh; head++)
        {
            long kvHead = head / (nh / nkv);
            var qh = Rope(q.narrow(1, head * hs, hs));
            var kh = Rope(k.narrow(1, kvHead * hs, hs));
            var vh = v.narrow(1, kvHead * hs, hs);
            heads.Add(CausalSoftmaxAttention(qh, kh, vh));
        }
        var x1 = x0 + Lin(torch.cat(heads, 1), "model.layers.0.self_attn.o_proj");
        var h2 = Rms(x1, w["model.layers.0.post_attention_layernorm.weight"]);
        var gate = Lin(h2, "model.layers.0.mlp.gate_proj");
        var x2 = x1 + Lin(gate * gate.sigmoid() * Lin(h2, "model.layers.0.mlp.up_proj"), "model.layers.0.mlp.down_proj");
        var expected = torch.mm(Rms(x2, w["model.norm.weight"]), w["lm_head.weight"].t());   // (T, vocab)

        var actual = model.Forward(ids)[0];
        double diff = MaxDiff(actual, expected);
        Assert.True(diff < 1e-4, $"max difference {diff}");
        Assert.True(expected.abs().max().ToSingle() > 0.1f);   // the comparison is not between near-zero tensors
    }

    [Fact]
    public void One_gpt2_block_matches_the_hand_computed_hugging_face_formulas()
    {
        using var scope = NewDisposeScope();
        var config = Gpt2(layers: 1);
        using var model = RandomCausal(config, seed: 13);
        var w = model.state_dict();
        using var noGrad = no_grad();
        var ids = RandomIds(1, 6, seed: 14);
        long nh = 4, hs = 8, c = 32;

        Tensor Ln(Tensor x, string name)
        {
            var mean = x.mean([-1], keepdim: true);
            var variance = (x - mean).pow(2).mean([-1], keepdim: true);
            return (x - mean) / (variance + 1e-5).sqrt() * w[name + ".weight"] + w[name + ".bias"];
        }
        Tensor Conv1D(Tensor x, string name) => torch.mm(x, w[name + ".weight"]) + w[name + ".bias"];   // weight is [in, out]
        Tensor GeluNew(Tensor x) => 0.5 * x * (1 + (Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x.pow(3))).tanh());

        var positions = torch.arange(6, dtype: ScalarType.Int64);
        var x0 = w["transformer.wte.weight"].index_select(0, ids[0]) + w["transformer.wpe.weight"].index_select(0, positions);
        var qkv = Conv1D(Ln(x0, "transformer.h.0.ln_1"), "transformer.h.0.attn.c_attn");   // (T, 3C)
        var heads = new List<Tensor>();
        for (long head = 0; head < nh; head++)
            heads.Add(CausalSoftmaxAttention(qkv.narrow(1, head * hs, hs), qkv.narrow(1, c + head * hs, hs), qkv.narrow(1, 2 * c + head * hs, hs)));
        var x1 = x0 + Conv1D(torch.cat(heads, 1), "transformer.h.0.attn.c_proj");
        var x2 = x1 + Conv1D(GeluNew(Conv1D(Ln(x1, "transformer.h.0.ln_2"), "transformer.h.0.mlp.c_fc")), "transformer.h.0.mlp.c_proj");
        var expected = torch.mm(Ln(x2, "transformer.ln_f"), w["transformer.wte.weight"].t());

        double diff = MaxDiff(model.Forward(ids)[0], expected);
        Assert.True(diff < 1e-4, $"max difference {diff}");
    }

    [Fact]
    public void Rms_norm_computes_in_fp32_and_multiplies_after_casting_back()
    {
        using var scope = NewDisposeScope();
        using var norm = new RmsNorm(4, 1e-6, ScalarType.BFloat16, null);
        using var noGrad = no_grad();
        norm.weight.copy_(torch.tensor(new float[] { 1.5f, 0.5f, 2f, 1f }));
        var x = torch.tensor(new float[] { 1, 2, 3, 4, -1, 0.5f, 8, 3 }, [2, 4]).to(ScalarType.BFloat16);
        var xf = x.to(ScalarType.Float32);
        var expected = norm.weight * (xf / (xf.pow(2).mean([-1], keepdim: true) + 1e-6).sqrt()).to(ScalarType.BFloat16);
        var actual = norm.forward(x);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        Assert.Equal(0.0, MaxDiff(actual, expected));
    }
}
