using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Adapters;

/// <summary>Shared steps for the adapter tests: a next-token loss, one AdamW step, non-zero adapters.</summary>
internal static class AdapterTestKit
{
    /// <summary>Mean next-token cross-entropy of <paramref name="ids"/> under the model, in fp32.</summary>
    public static Tensor NextTokenLoss(CausalLanguageModel model, Tensor ids)
    {
        using var scope = NewDisposeScope();
        long b = ids.shape[0], t = ids.shape[1];
        var logits = model.Forward(ids).to(ScalarType.Float32);                         // (B, T, V)
        var predicted = logits.narrow(1, 0, t - 1).reshape(b * (t - 1), -1);
        var targets = ids.narrow(1, 1, t - 1).reshape(b * (t - 1));
        return F.cross_entropy(predicted, targets).MoveToOuterDisposeScope();
    }

    /// <summary>One AdamW step on the trainable parameters; returns the loss before the step.</summary>
    public static float Step(CausalLanguageModel model, Tensor ids, double lr = 1e-2)
    {
        using var scope = NewDisposeScope();
        var optimizer = torch.optim.AdamW(Freezing.TrainableParameters(model), lr: lr);
        optimizer.zero_grad();
        var loss = NextTokenLoss(model, ids);
        loss.backward();
        optimizer.step();
        return loss.item<float>();
    }

    /// <summary>Gives every lora_B random values, as after training, so the adapters change the outputs.</summary>
    public static void RandomizeAdapters(TransformerModel model, long seed)
    {
        using var noGrad = torch.no_grad();
        var gen = new Generator((ulong)seed);
        foreach (var (name, p) in Lora.AdapterParameters(model))
            if (name.EndsWith("lora_B.weight", StringComparison.Ordinal))
            {
                using var values = torch.randn(p.shape, generator: gen) * 0.1;
                p.copy_(values);
            }
    }
}
