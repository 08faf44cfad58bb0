// Reward modelling plugged into the shared TrainingLoop (TRL RewardTrainer): Items = pairs. Metrics:
//   train   train/loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies (means over pairs)
//   eval    eval/loss, eval/accuracy (r_c > r_r), eval/rewards/chosen, eval/rewards/rejected, eval/rewards/margins
// and at each evaluation a "scores" table for fixed evaluation pairs (completion = chosen, reference = rejected).
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers;

public sealed class RewardTask : ITrainingTask<RewardBatch>
{
    public const string EvalChosenMetric = "eval/" + MetricNames.RewardsChosen;
    public const string EvalRejectedMetric = "eval/" + MetricNames.RewardsRejected;
    public const string EvalMarginsMetric = "eval/" + MetricNames.RewardsMargins;
    /// <summary>Pairs shown in the scores table at each evaluation.</summary>
    public const int SamplePairs = 8;

    private readonly RewardSpec _spec;
    private readonly TrainableModel<ScoreModel> _setup;
    private readonly IReadOnlyList<PreferencePair> _train;
    private readonly IReadOnlyList<PreferencePair> _eval;
    private readonly IReadOnlyList<(PreferenceExample Example, PreferencePair Pair)> _samples;
    private readonly IRunReporter _reporter;
    private readonly long _padId;

    public RewardTask(RewardSpec spec, TrainableModel<ScoreModel> setup, IReadOnlyList<PreferencePair> train, IReadOnlyList<PreferencePair> eval,
        IReadOnlyList<(PreferenceExample Example, PreferencePair Pair)> samples, IRunReporter reporter)
    {
        if (train.Count == 0) throw new TrainerSetupException("the training data has no usable preference pairs");
        _spec = spec;
        _setup = setup;
        _train = train;
        _eval = eval;
        _samples = samples;
        _reporter = reporter;
        _padId = setup.Tokenizer.PadId ?? setup.Tokenizer.EosId ?? 0;
    }

    public int DatasetSize => _train.Count;
    public IReadOnlyList<NamedParameter> Parameters => _setup.Parameters;

    public MicroBatch<RewardBatch> Collate(IReadOnlyList<int> rows)
    {
        var batch = RewardBatch.Collate(rows.Select(r => _train[r]).ToList(), _padId, _setup.Device, _spec.UseMargin);
        return new MicroBatch<RewardBatch>(batch, rows.Count, batch.Tokens);
    }

    public MicroBatchLoss Loss(RewardBatch batch)
    {
        var (chosen, rejected) = batch.Rewards(_setup.Model);
        return new MicroBatchLoss(batch.LossSum(chosen, rejected, _spec.CenterRewardsCoefficient), RewardBatch.MetricSums(chosen, rejected));
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
                double loss = 0;
                var sums = new Dictionary<string, double>(StringComparer.Ordinal);
                for (int start = 0; start < _eval.Count; start += _spec.Training.BatchSize)
                {
                    using var scope = NewDisposeScope();
                    var batch = RewardBatch.Collate(_eval.Skip(start).Take(_spec.Training.BatchSize).ToList(), _padId, _setup.Device, _spec.UseMargin);
                    var (chosen, rejected) = batch.Rewards(model);
                    loss += batch.LossSum(chosen, rejected, _spec.CenterRewardsCoefficient).item<float>();
                    foreach (var (name, value) in RewardBatch.MetricSums(chosen, rejected)) sums[name] = sums.GetValueOrDefault(name) + value;
                }
                double n = _eval.Count;
                metrics[MetricNames.EvalLoss] = loss / n;
                metrics[MetricNames.EvalAccuracy] = sums[RewardBatch.AccuracyMetric] / n;
                metrics[EvalChosenMetric] = sums[RewardBatch.ChosenMetric] / n;
                metrics[EvalRejectedMetric] = sums[RewardBatch.RejectedMetric] / n;
                metrics[EvalMarginsMetric] = sums[RewardBatch.MarginsMetric] / n;
            }
            if (_samples.Count > 0) _reporter.Samples(step, ScoreSamples());
        }
        finally
        {
            model.train();
        }
        return metrics;
    }

    private List<SampleRow> ScoreSamples()
    {
        var sequences = _samples.Select(s => (IReadOnlyList<int>)s.Pair.Chosen).Concat(_samples.Select(s => (IReadOnlyList<int>)s.Pair.Rejected)).ToList();
        var rewards = RewardScoring.Score(_setup.Model, sequences, _padId, _spec.Training.BatchSize);
        return _samples.Select((s, i) => new SampleRow(i, s.Example.Prompt.ToString(), s.Example.Chosen.ToString(),
            Score: rewards[i], Reference: s.Example.Rejected.ToString(), ReferenceScore: rewards[_samples.Count + i], Table: "scores")).ToList();
    }

    public void SaveModel(string folder) => _setup.SaveCheckpoint(folder, TrainingMethod.Reward);
    public void LoadModel(string folder) => _setup.LoadCheckpoint(folder);
}
