using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Causal-LM training throughput: forward, cross-entropy on the shifted tokens, backward and an AdamW step
/// (weight decay 0.1 on matrices) on packed batches of random token ids, fp32 master weights, compute in the given
/// dtype. Pre-tokenised: a few (B, T+1) batches are drawn up front and cycled.</summary>
public static class TrainingStep
{
    public static Measurement Run(string id, BenchConfig config, ScalarType dtype, int repetitions)
    {
        using var model = config.CreateModel(dtype);
        using var trainer = new Trainer(model, Trainer.RandomBatches(config, seed: 11, count: 4));
        var run = Timing.Run(() => trainer.Step(), warmups: Timing.StepWarmups, repetitions);
        long tokens = (long)config.Batch * config.SequenceLength;
        double flops = ModelFlops.Training(model.Config, model.CountParameters().NonEmbedding, tokens, config.SequenceLength);
        return Timing.Rate(id, "tokens/s", tokens, run, flops, notes: $"{config.Batch}x{config.SequenceLength}, loss {trainer.LastLoss:F3}");
    }

    /// <summary>The step itself, shared with the --curves mode and the training profile.</summary>
    public sealed class Trainer : IDisposable
    {
        private readonly Engine.Models.CausalLanguageModel _model;
        private readonly AdamWOptimizer _optimizer;
        private readonly List<Tensor> _batches;
        private readonly long _length;
        private int _next;

        /// <param name="batches">(B, T+1) token ids, cycled; the trainer disposes them.</param>
        public Trainer(Engine.Models.CausalLanguageModel model, List<Tensor> batches)
        {
            _model = model;
            _batches = batches;
            _length = batches[0].shape[1] - 1;
            _optimizer = new AdamWOptimizer(ParameterGroups.Trainable(model), weightDecay: 0.1);
        }

        public static List<Tensor> RandomBatches(BenchConfig config, long seed, int count)
        {
            var gen = new torch.Generator((ulong)seed);
            return Enumerable.Range(0, count)
                .Select(_ => torch.randint(0, BenchConfig.Vocab, [config.Batch, config.SequenceLength + 1], generator: gen, dtype: ScalarType.Int64))
                .ToList();
        }

        public double LastLoss { get; private set; }
        public double LearningRate { get; set; } = 1e-4;

        public void Step()
        {
            using var scope = NewDisposeScope();
            var ids = _batches[_next++ % _batches.Count];
            var input = ids.narrow(1, 0, _length);
            var target = ids.narrow(1, 1, _length);
            // The SFT trainer's loss: the head's cross-entropy chunk by chunk (LinearCrossEntropy), never the full logits;
            // mean over the tokens as F.cross_entropy's default (what bench.py runs).
            var hidden = _model.Hidden(input);                                                     // (B, T, C)
            var loss = _model.TokenLossSum(hidden, target, new TokenLossStats()).div(target.numel());
            loss.backward();
            _optimizer.Step(LearningRate);
            _optimizer.ZeroGrad();
            LastLoss = loss.item<float>();
        }

        public void Dispose()
        {
            _optimizer.Dispose();
            foreach (var b in _batches) b.Dispose();
        }
    }
}
