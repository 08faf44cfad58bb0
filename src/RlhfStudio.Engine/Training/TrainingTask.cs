using static TorchSharp.torch;

namespace RlhfStudio.Engine.Training;

/// <summary>A collated micro-batch. <paramref name="Items"/> is what the loss averages over (label tokens for SFT,
/// pairs for reward modelling); <paramref name="Tokens"/> is the tokens processed (for tokens per second).</summary>
public sealed record MicroBatch<TBatch>(TBatch Data, long Items, long Tokens);

/// <summary>The loss of one micro-batch: the SUM of the per-item losses (with its autograd graph), and optional metric
/// sums over the same items (e.g. correctly predicted tokens for <c>mean_token_accuracy</c>). The loop divides both by
/// the items of the whole optimisation step (loss) or logging window (metrics).</summary>
public sealed record MicroBatchLoss(Tensor LossSum, IReadOnlyDictionary<string, double>? MetricSums = null);

/// <summary>What a trainer (SFT, reward, ...) plugs into <see cref="TrainingLoop{TBatch}"/>: its data, its loss and
/// how to save and restore the part of the model it trains.</summary>
public interface ITrainingTask<TBatch>
{
    /// <summary>Rows of the training set (map-style: rows are addressed by index).</summary>
    int DatasetSize { get; }

    /// <summary>The parameters the optimiser updates (see <see cref="ParameterGroups.Trainable"/>). Their names key the
    /// optimiser state in checkpoints.</summary>
    IReadOnlyList<NamedParameter> Parameters { get; }

    /// <summary>Builds the micro-batch of these training rows. Tensors made here are freed when the optimisation step
    /// ends (they are created inside the step's dispose scope).</summary>
    MicroBatch<TBatch> Collate(IReadOnlyList<int> rows);

    /// <summary>Forward pass in training mode: the summed loss of the batch's items.</summary>
    MicroBatchLoss Loss(TBatch batch);

    /// <summary>Evaluates at <paramref name="step"/> and returns metrics under TRL names ("eval/loss", ...), or null when
    /// the task has no evaluation. Runs under no_grad in its own dispose scope; the task switches the model to eval
    /// mode and back, and may report sample tables itself.</summary>
    IReadOnlyDictionary<string, double>? Evaluate(long step);

    /// <summary>Writes the trained part of the model into the checkpoint folder (a full Hugging Face folder, a PEFT
    /// adapter, ...) at its top level, so the checkpoint folder loads as a model.</summary>
    void SaveModel(string folder);

    /// <summary>Restores what <see cref="SaveModel"/> wrote, into the task's (freshly built) model.</summary>
    void LoadModel(string folder);
}
