using System.Text.Json.Nodes;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Models;

/// <summary>Tiny configs and helpers shared by the model and IO tests.</summary>
internal static class TestModels
{
    public const int Vocab = 61;

    public static JsonObject LlamaJson(string modelType = "llama", bool tied = false, int kvHeads = 2, int layers = 2, int hidden = 32) => new()
    {
        ["model_type"] = modelType,
        ["architectures"] = new JsonArray(modelType switch { "qwen2" => "Qwen2ForCausalLM", "mistral" => "MistralForCausalLM", _ => "LlamaForCausalLM" }),
        ["vocab_size"] = Vocab,
        ["hidden_size"] = hidden,
        ["intermediate_size"] = 48,
        ["num_hidden_layers"] = layers,
        ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = kvHeads,
        ["max_position_embeddings"] = 64,
        ["rms_norm_eps"] = 1e-6,
        ["rope_theta"] = 10000.0,
        ["tie_word_embeddings"] = tied,
        ["hidden_act"] = "silu",
        ["bos_token_id"] = 1,
        ["eos_token_id"] = 2,
        ["pad_token_id"] = 0,
        ["torch_dtype"] = "float32",
        ["some_unknown_key"] = new JsonObject { ["nested"] = "kept" },
    };

    public static JsonObject Gpt2Json(int layers = 2) => new()
    {
        ["model_type"] = "gpt2",
        ["architectures"] = new JsonArray("GPT2LMHeadModel"),
        ["vocab_size"] = Vocab,
        ["n_embd"] = 32,
        ["n_layer"] = layers,
        ["n_head"] = 4,
        ["n_positions"] = 64,
        ["n_inner"] = null,
        ["layer_norm_epsilon"] = 1e-5,
        ["activation_function"] = "gelu_new",
        ["bos_token_id"] = 50,
        ["eos_token_id"] = 50,
    };

    /// <param name="hidden">32 gives 8-wide heads; 64 gives 16-wide heads, the smallest the fused CPU decoder takes.</param>
    public static ModelConfig Llama(string modelType = "llama", bool tied = false, int kvHeads = 2, int layers = 2, int hidden = 32) =>
        ModelConfig.Parse(LlamaJson(modelType, tied, kvHeads, layers, hidden), "test-config.json");

    public static ModelConfig Gpt2(int layers = 2) => ModelConfig.Parse(Gpt2Json(layers), "test-config.json");

    /// <summary>Every parameter random (norm weights around 1, biases non-zero), so that a swapped or unloaded
    /// tensor shows in the outputs.</summary>
    public static T Randomize<T>(T model, long seed) where T : TransformerModel
    {
        using var noGrad = torch.no_grad();
        var gen = new Generator((ulong)seed);
        foreach (var (name, p) in model.named_parameters().OrderBy(x => x.name, StringComparer.Ordinal))
        {
            using var values = torch.randn(p.shape, generator: gen) * 0.2;
            bool isNormWeight = name.EndsWith("norm.weight", StringComparison.Ordinal) || name.Contains(".ln_") || name.Contains("ln_f.");
            if (isNormWeight && name.EndsWith("weight", StringComparison.Ordinal)) values.add_(1.0);
            p.copy_(values);
        }
        return model;
    }

    public static CausalLanguageModel RandomCausal(ModelConfig config, long seed = 7, ScalarType dtype = ScalarType.Float32) =>
        Randomize(new CausalLanguageModel(config, dtype), seed);

    public static Tensor Ids(params long[][] rows) => torch.tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length], dtype: ScalarType.Int64);

    public static Tensor RandomIds(long batch, long length, long seed, int low = 3)
    {
        var gen = new Generator((ulong)seed);
        return torch.randint(low, Vocab, [batch, length], generator: gen, dtype: ScalarType.Int64);
    }

    /// <summary>Same dtype, shape and values.</summary>
    public static bool Same(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape)) return false;
        using var eq = a.eq(b);   // Tensor.equal is elementwise in TorchSharp
        using var all = eq.all();
        return all.item<bool>();
    }

    /// <summary>Largest absolute difference relative to the largest magnitude of <paramref name="b"/> (the reference).</summary>
    public static double MaxRel(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return MaxDiff(a, b) / Math.Max(1e-6, b.to(ScalarType.Float32).abs().max().item<float>());
    }

    public static double MaxDiff(Tensor a, Tensor b)
    {
        using var d = (a.to(ScalarType.Float32) - b.to(ScalarType.Float32)).abs().max();
        return d.item<float>();
    }
}

/// <summary>A temporary folder deleted at the end of the test.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "rlhf-tests-" + Guid.NewGuid().ToString("N"));
    public TempDir() => Directory.CreateDirectory(Path);
    public string this[string name] => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
