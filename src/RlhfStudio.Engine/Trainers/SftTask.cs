// SFT plugged into the shared TrainingLoop: loss = token-level cross-entropy summed over label tokens (Items = label
// tokens, so the loop's normalisation gives TRL's per-token mean across accumulated micro-batches). Evaluation: eval/loss
// and eval/mean_token_accuracy over the whole eval set, a sample table of generations for fixed prompts (seeded), and
// for the built-in arithmetic task eval/exact_match and eval/true_score from greedy answers to held-out questions.
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Trainers;

/// <summary>A prompt shown at every evaluation, with the dataset's reference completion when there is one.</summary>
public sealed record SamplePrompt(Content Prompt, string? Reference);

public sealed class SftTask : ITrainingTask<SftBatch>
{
    /// <summary>Held-out arithmetic questions answered greedily at each evaluation of the built-in task.</summary>
    public const int ExactMatchQuestions = 200;

    private readonly SftSpec _spec;
    private readonly TrainableModel<CausalLanguageModel> _setup;
    private readonly IReadOnlyList<SftSequence> _train;
    private readonly IReadOnlyList<SftSequence> _eval;
    private readonly IReadOnlyList<EvalSamplePrompt> _samplePrompts;
    private readonly IReadOnlyList<string> _exactMatchQuestions;
    private readonly IRunReporter _reporter;
    private readonly CancellationToken _cancel;
    private readonly long _padId;

    public SftTask(SftSpec spec, TrainableModel<CausalLanguageModel> setup, IReadOnlyList<SftSequence> train, IReadOnlyList<SftSequence> eval,
        IReadOnlyList<SamplePrompt> samplePrompts, IReadOnlyList<string> exactMatchQuestions, IRunReporter reporter, CancellationToken cancel = default)
    {
        if (train.Count == 0) throw new TrainerSetupException("the training data has no usable sequences");
        _spec = spec;
        _setup = setup;
        _train = train;
        _eval = eval;
        _samplePrompts = samplePrompts.Select(p => new EvalSamplePrompt(p.Prompt.ToString(), setup.Template.TokenizePrompt(setup.Tokenizer, p.Prompt), p.Reference)).ToList();
        _exactMatchQuestions = exactMatchQuestions;
        _reporter = reporter;
        _cancel = cancel;
        _padId = setup.Tokenizer.PadId ?? setup.Tokenizer.EosId ?? 0;
    }

    public int DatasetSize => _train.Count;
    public IReadOnlyList<NamedParameter> Parameters => _setup.Parameters;

    public MicroBatch<SftBatch> Collate(IReadOnlyList<int> rows) =>
        SftBatch.Collate(rows.Select(r => _train[r]).ToList(), _padId, _setup.Device);

    public MicroBatchLoss Loss(SftBatch batch)
    {
        var (loss, correct) = batch.Loss(_setup.Model);
        return new MicroBatchLoss(loss, new Dictionary<string, double> { [MetricNames.MeanTokenAccuracy] = correct });
    }

    public IReadOnlyDictionary<string, double>? Evaluate(long step)
    {
        var model = _setup.Model;
        var metrics = new Dictionary<string, double>(StringComparer.Ordinal);
        model.eval();
        try
        {
            if (_eval.Count > 0)
            {
                double lossSum = 0;
                long correct = 0, items = 0;
                for (int start = 0; start < _eval.Count; start += _spec.Training.BatchSize)
                {
                    using var scope = TorchSharp.torch.NewDisposeScope();
                    var batch = SftBatch.Collate(_eval.Skip(start).Take(_spec.Training.BatchSize).ToList(), _padId, _setup.Device);
                    if (batch.Items == 0) continue;
                    var (loss, c) = batch.Data.Loss(model);
                    lossSum += loss.item<float>();
                    correct += c;
                    items += batch.Items;
                }
                if (items > 0)
                {
                    metrics[MetricNames.EvalLoss] = lossSum / items;
                    metrics[MetricNames.EvalMeanTokenAccuracy] = correct / (double)items;
                }
            }
            EvalGeneration.AddExactMatch(metrics, _setup, _exactMatchQuestions, _cancel);
            if (_samplePrompts.Count > 0) _reporter.Samples(step, EvalGeneration.SampleTable(_setup, _spec, _samplePrompts, _cancel));
        }
        finally
        {
            model.train();
        }
        return metrics;
    }

    public void SaveModel(string folder) => _setup.SaveCheckpoint(folder, TrainingMethod.Sft);
    public void LoadModel(string folder) => _setup.LoadCheckpoint(folder);
}
