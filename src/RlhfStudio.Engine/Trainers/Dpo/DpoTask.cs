// DPO plugged into the shared TrainingLoop (TRL DPOTrainer, sigmoid loss): Items = pairs, so the loop's train/loss is
// the mean loss per pair and the metric sums become TRL's means. Metrics:
//   train   train/loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
//           logps/rejected (+ the loop's learning rate, grad norm, epoch, tokens/s)
//   eval    eval/loss and eval/ + each of the above over the whole evaluation set; for the built-in arithmetic task
//           eval/exact_match and eval/true_score from greedy answers to held-out questions
// and at each evaluation an "eval" sample table: the policy's completion and true score next to the reference model's
// (generated once: the reference does not change).
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Training;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Dpo;

/// <summary>A prompt of the sample table, with the reference model's completion for it.</summary>
public sealed record DpoSamplePrompt(Content Prompt, IReadOnlyList<int> PromptIds, string ReferenceCompletion);

public sealed class DpoTask : ITrainingTask<DpoBatch>
{
    private readonly DpoSpec _spec;
    private readonly TrainableModel<CausalLanguageModel> _setup;
    private readonly DpoReference _reference;
    private readonly IReadOnlyList<DpoPair> _train;
    private readonly IReadOnlyList<DpoPair> _eval;
    private readonly ReferenceLogProbs? _precomputed;
    private readonly IReadOnlyList<EvalSamplePrompt> _samples;
    private readonly IReadOnlyList<string> _exactMatchQuestions;
    private readonly IRunReporter _reporter;
    private readonly CancellationToken _cancel;
    private readonly long _padId;

    public DpoTask(DpoSpec spec, TrainableModel<CausalLanguageModel> setup, DpoReference reference, IReadOnlyList<DpoPair> train, IReadOnlyList<DpoPair> eval,
        ReferenceLogProbs? precomputed, IReadOnlyList<DpoSamplePrompt> samples, IReadOnlyList<string> exactMatchQuestions, IRunReporter reporter,
        CancellationToken cancel = default)
    {
        if (train.Count == 0) throw new TrainerSetupException("the training data has no usable preference pairs");
        if (precomputed is not null && (precomputed.Train.Count != train.Count || precomputed.Eval.Count != eval.Count))
            throw new ArgumentException("the precomputed reference log-probabilities do not match the pairs", nameof(precomputed));
        _spec = spec;
        _setup = setup;
        _reference = reference;
        _train = train;
        _eval = eval;
        _precomputed = precomputed;
        _samples = samples.Select(p => new EvalSamplePrompt(p.Prompt.ToString(), p.PromptIds, p.ReferenceCompletion)).ToList();
        _exactMatchQuestions = exactMatchQuestions;
        _reporter = reporter;
        _cancel = cancel;
        _padId = setup.Tokenizer.PadId ?? setup.Tokenizer.EosId ?? 0;
    }

    public int DatasetSize => _train.Count;
    public IReadOnlyList<NamedParameter> Parameters => _setup.Parameters;

    public MicroBatch<DpoBatch> Collate(IReadOnlyList<int> rows)
    {
        var batch = DpoBatch.Collate(rows.Select(r => _train[r]).ToList(), _padId, _setup.Device, _precomputed is null ? null : rows.Select(r => _precomputed.Train[r]).ToList());
        return new MicroBatch<DpoBatch>(batch, batch.Pairs, batch.Tokens);
    }

    public MicroBatchLoss Loss(DpoBatch batch)
    {
        var (result, policyChosen, policyRejected) = Forward(batch);
        return new MicroBatchLoss(result.Losses.sum(), DpoLoss.MetricSums(result, policyChosen, policyRejected));
    }

    /// <summary>The policy's log-probabilities (one concatenated forward), the reference's (precomputed or one forward
    /// without a graph) and the loss.</summary>
    public (DpoLossResult Result, Tensor PolicyChosen, Tensor PolicyRejected) Forward(DpoBatch batch)
    {
        var (policyChosen, policyRejected) = batch.Split(batch.SequenceLogProbs(_setup.Model));
        Tensor referenceChosen, referenceRejected;
        if (batch.ReferenceChosen is not null && batch.ReferenceRejected is not null)
            (referenceChosen, referenceRejected) = (batch.ReferenceChosen, batch.ReferenceRejected);
        else
            (referenceChosen, referenceRejected) = batch.Split(_reference.LogProbs(batch));
        var result = DpoLoss.Sigmoid(policyChosen, policyRejected, referenceChosen, referenceRejected, _spec.Beta, _spec.LabelSmoothing,
            _spec.RpoAlpha, batch.ChosenTargets);
        return (result, policyChosen, policyRejected);
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
                int size = _spec.Training.BatchSize;
                for (int start = 0; start < _eval.Count; start += size)
                {
                    using var scope = NewDisposeScope();
                    var pairs = _eval.Skip(start).Take(size).ToList();
                    var batch = DpoBatch.Collate(pairs, _padId, _setup.Device, _precomputed?.Eval.Skip(start).Take(size).ToList());
                    var (result, chosen, rejected) = Forward(batch);
                    loss += result.Losses.sum().item<float>();
                    foreach (var (name, value) in DpoLoss.MetricSums(result, chosen, rejected)) sums[name] = sums.GetValueOrDefault(name) + value;
                    GC.Collect(0);
                }
                metrics[MetricNames.EvalLoss] = loss / _eval.Count;
                foreach (var (name, sum) in sums) metrics["eval/" + name] = sum / _eval.Count;
            }
            EvalGeneration.AddExactMatch(metrics, _setup, _exactMatchQuestions, _cancel);
            if (_samples.Count > 0) _reporter.Samples(step, EvalGeneration.SampleTable(_setup, _spec, _samples, _cancel));
        }
        finally
        {
            model.train();
        }
        return metrics;
    }

    /// <summary>The trained part of the policy, plus the precomputed reference log-probabilities (see ReferenceLogProbs).</summary>
    public void SaveModel(string folder)
    {
        _setup.SaveCheckpoint(folder, TrainingMethod.Dpo);
        _precomputed?.Save(folder);
    }

    public void LoadModel(string folder) => _setup.LoadCheckpoint(folder);
}
