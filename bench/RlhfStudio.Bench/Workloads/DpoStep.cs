using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Bench.Workloads;

/// <summary>A DPO step as TRL's DPOTrainer (sigmoid loss, beta 0.1): the policy and a frozen reference model score the
/// completion log-probabilities of 8 chosen and 8 rejected sequences (128 prompt + 128 completion tokens, in one
/// concatenated forward each), loss -logsigmoid(beta((pi_c - ref_c) - (pi_r - ref_r))), backward, AdamW on the
/// policy. Written directly with the engine's modules (the DPO trainer is another branch's work).</summary>
public static class DpoStep
{
    public const int Pairs = 8, Prompt = 128, Completion = 128;
    private const double Beta = 0.1;

    public static Measurement Run(string id, BenchConfig config, ScalarType dtype, int repetitions)
    {
        using var policy = config.CreateModel(dtype);
        using var reference = config.CreateModel(dtype);
        foreach (var p in reference.parameters()) p.requires_grad = false;
        using var optimizer = new AdamWOptimizer(ParameterGroups.Trainable(policy), weightDecay: 0.1);
        int length = Prompt + Completion;
        using var ids = torch.randint(0, BenchConfig.Vocab, [2 * Pairs, length], generator: new torch.Generator(17), dtype: ScalarType.Int64);
        using var input = ids.narrow(1, 0, length - 1);
        using var target = ids.narrow(1, 1, length - 1).unsqueeze(-1);
        // Targets at positions Prompt..length-1 are completion tokens (label positions Prompt-1.. after the shift).
        using var completionMask = torch.arange(length - 1).ge(Prompt - 1).to(ScalarType.Float32).unsqueeze(0);

        Tensor SequenceLogProbs(CausalLanguageModel model)
        {
            var logits = model.Forward(input).to(ScalarType.Float32);                      // (2P, T-1, V)
            var logp = logits.log_softmax(-1).gather(-1, target).squeeze(-1);               // (2P, T-1)
            return (logp * completionMask).sum(-1);                                         // (2P)
        }

        double lastLoss = 0;
        var run = Timing.Run(() =>
        {
            using var scope = NewDisposeScope();
            Tensor refLogps;
            using (torch.no_grad()) refLogps = SequenceLogProbs(reference);
            var logps = SequenceLogProbs(policy);
            var margin = (logps.narrow(0, 0, Pairs) - refLogps.narrow(0, 0, Pairs)) - (logps.narrow(0, Pairs, Pairs) - refLogps.narrow(0, Pairs, Pairs));
            var loss = -F.logsigmoid(Beta * margin).mean();
            loss.backward();
            optimizer.Step(1e-6);
            optimizer.ZeroGrad();
            lastLoss = loss.item<float>();
        }, warmups: Timing.StepWarmups, repetitions);
        long tokens = 2L * Pairs * (length - 1);
        // Policy forward + backward (3 forwards) and the reference forward (1): 4 forward passes.
        double flops = 4 * ModelFlops.Forward(policy.Config, policy.CountParameters().NonEmbedding, tokens, length - 1);
        return Timing.Rate(id, "tokens/s", tokens, run, flops, notes: $"{Pairs} pairs x ({Prompt}+{Completion}), policy+reference, loss {lastLoss:F4}");
    }
}
