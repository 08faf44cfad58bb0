// The on-policy loop PPO and RLOO share (TRL PPOTrainer.train / RLOOTrainer.train), one optimisation step per rollout:
//
//   cancel? -> prompts -> rollout (sample, recompute logprobs, reference, values, scores) -> targets (objective)
//   -> num_ppo_epochs x (fresh permutation -> mini-batches -> micro-batches, gradient accumulation -> clip -> AdamW)
//   -> metrics under TRL's names, guards, KL controller -> samples -> checkpoint
//
// Sizes (TRL's names): batch = training.batchSize responses per step (RLOO: batch / k prompts, each sampled k times);
// mini-batch = batch / numMiniBatches (one optimiser update each); micro-batch = mini-batch / gradientAccumulation.
// The learning rate follows the run's schedule over the steps (TRL steps its scheduler once per rollout batch), so all
// updates of one step share one rate. Every draw is seeded by (seed, step): a resumed run repeats the same rollouts
// and permutations, so its curve continues the uninterrupted one exactly.
using System.Diagnostics;
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

public sealed class RlTrainer
{
    /// <summary>Metrics logged besides TRL's (see <see cref="MetricNames"/>).</summary>
    public const string KlCoefMetric = "objective/kl_coef";
    public const string TrueScoreMetric = "objective/true_score";
    public const string EpisodesPerSecondMetric = "eps";
    public const string PeakMemoryMetric = "memory/peak_rss_mb";
    // A step's time by phase (the PPO split; see RolloutPhases): the rollout (the sampling loop, with the
    // log-probabilities and values it reads when they are taken there), the policy's own forward (recomputed
    // log-probabilities; only when it runs), the reference pass, a separate value model's pass (only with one), scoring,
    // all of it together (experience), and the optimisation (advantages and the PPO epochs).
    public const string RolloutSecondsMetric = "time/rollout_s";
    public const string PolicyForwardSecondsMetric = "time/policy_forward_s";
    public const string ReferenceSecondsMetric = "time/reference_s";
    public const string ValueSecondsMetric = "time/value_s";
    public const string ScoringSecondsMetric = "time/scoring_s";
    public const string ExperienceSecondsMetric = "time/experience_s";
    public const string OptimizeSecondsMetric = "time/optimize_s";
    public const string SampleTable = "rollout";
    /// <summary>Rows of the sample table.</summary>
    public const int SampleRows = 4;

    private readonly RunContext _context;
    private readonly RlSpec _spec;
    private readonly RlModels _models;
    private readonly PromptSet _prompts;
    private readonly IRlObjective _objective;
    private readonly IRunReporter _reporter;
    private readonly KlController _kl;
    private readonly RewardHackingGuards _guards = new();
    private readonly RolloutSettings _rollout;
    private readonly bool _arithmeticPrompts;

    private long _episode;
    private readonly RunRecord _record;

    public RlTrainer(RunContext context, RlModels models, PromptSet prompts, IRlObjective objective)
    {
        _context = context;
        _spec = context.Spec as RlSpec ?? throw new ArgumentException($"RL training needs a PPO or RLOO spec, got {context.Spec.Method}", nameof(context));
        _models = models;
        _prompts = prompts;
        _objective = objective;
        _reporter = context.Reporter;
        _record = new RunRecord(context);
        _kl = _spec is PpoSpec { AdaptiveKl: true } ppo ? new KlController(_spec.KlCoef, ppo.TargetKl, ppo.KlHorizon) : new KlController(_spec.KlCoef);
        var eos = models.Tokenizer.EosId ?? throw new ArgumentException("the tokenizer has no EOS token: responses could never end");
        MicroBatchSize = _spec.Training.BatchSize / _spec.NumMiniBatches / _spec.Training.GradientAccumulation;
        _rollout = new RolloutSettings(_spec.Sampling.Temperature, _spec.Sampling.MaxNewTokens, [eos], models.Tokenizer.PadId ?? eos,
            MicroBatchSize, _spec.MissingEosPenalty, LogProbsFromSampling: !_spec.RecomputeLogProbs);
        _arithmeticPrompts = prompts.Prompts.Take(64).All(p => ArithmeticTask.TryParse(p.Text, out _));
    }

    private int FrozenPolicySteps => _spec is PpoSpec ppo ? ppo.FreezeActorSteps : 0;

    public int PromptsPerStep => _spec.Training.BatchSize / _objective.SamplesPerPrompt;
    public int MicroBatchSize { get; }
    public KlController Kl => _kl;
    public long GlobalStep => _record.Step;

    /// <summary>Steps of the run: training.maxSteps, else ceil(epochs * prompts / prompts per step) (TRL total_episodes /
    /// batch_size, with epochs counted in prompts).</summary>
    public long TotalSteps(IndexSampler sampler) =>
        _spec.Training.MaxSteps > 0 ? _spec.Training.MaxSteps : Math.Max(1, (long)Math.Ceiling(_spec.Training.Epochs * sampler.BatchesPerEpoch));

    public RunOutcome Run()
    {
        var output = _context.OutputDirectory;
        foreach (var leftover in Checkpoints.DeleteLeftovers(output))
            _reporter.Event(RunEvent.Info($"removed {Path.GetFileName(leftover)}, left by an interrupted save"));
        // drop_last as TRL: every rollout has exactly the batch size.
        var sampler = new IndexSampler(_prompts.Count, PromptsPerStep, _context.Spec.Seed, shuffle: true, dropLast: true);
        long totalSteps = TotalSteps(sampler);
        var schedule = LearningRateSchedule.For(_spec.Training, totalSteps);
        var parameters = _models.TrainableParameters();
        using var optimizer = AdamWOptimizer.For(parameters, _spec.Training);
        optimizer.ZeroGrad();

        if (_context.ResumeFrom is { } resumeFrom)
        {
            var failure = Resume(resumeFrom, sampler, schedule, optimizer);
            if (failure is not null) return failure;
        }
        else random.manual_seed(_context.Spec.Seed);

        var meter = new ProgressMeter(_reporter, totalSteps, TimeSpan.FromMilliseconds(250));
        meter.Report(_record.Step, force: true);
        while (_record.Step < totalSteps)
        {
            if (_context.Cancellation.IsCancellationRequested) return Cancel(sampler, schedule, optimizer, totalSteps, meter);
            var started = Stopwatch.GetTimestamp();
            RunOutcome? failure;
            try
            {
                failure = Step(sampler, schedule, optimizer, parameters, totalSteps, meter);
            }
            catch (OperationCanceledException)
            {
                // Cancelled during generation: the step did not happen; the weights are those of the last step.
                return Cancel(sampler, schedule, optimizer, totalSteps, meter, rewind: true);
            }
            GC.Collect(0);   // frees Scalars no dispose scope tracks (see notes/torchsharp.md)
            if (failure is not null) return failure;
            meter.StepTook(Stopwatch.GetElapsedTime(started));
            bool last = _record.Step == totalSteps;
            var saveSteps = _spec.Checkpoints.SaveSteps;
            if ((saveSteps > 0 && _record.Step % saveSteps == 0) || last)
            {
                meter.Report(_record.Step, "save", force: true);
                var saveFailure = Save(sampler, schedule, optimizer, totalSteps);
                if (saveFailure is not null) return saveFailure;
            }
            meter.Report(_record.Step, force: last);
        }
        _reporter.Event(RunEvent.Info($"peak memory {PeakMemoryMegabytes():F0} MB (process RSS high-water mark)", _record.Step));
        return RunOutcome.Completed(null, _record.LastCheckpoint);
    }

    private SamplerPosition? _positionBeforeStep;

    private RunOutcome? Step(IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, IReadOnlyList<NamedParameter> parameters,
        long totalSteps, ProgressMeter meter)
    {
        long stepNumber = _record.Step + 1;
        var stepClock = Stopwatch.StartNew();
        _positionBeforeStep = sampler.Position;
        var rows = sampler.Next();
        // RLOO's layout: k consecutive blocks of the same prompts (TRL queries.repeat(rloo_k, 1)).
        var prompts = Enumerable.Range(0, _objective.SamplesPerPrompt).SelectMany(_ => rows.Select(r => _prompts[r])).ToList();

        meter.Report(_record.Step, "rollout", force: true);
        using var scope = NewDisposeScope();
        using var rollout = RolloutSampler.Collect(_models, prompts, _rollout, StepSeed(stepNumber), _context.Cancellation);
        double experienceSeconds = stepClock.Elapsed.TotalSeconds;
        var metrics = new Dictionary<string, double>(_objective.Prepare(rollout, _kl.Value), StringComparer.Ordinal);

        meter.Report(_record.Step, "train", force: true);
        double learningRate = schedule.At(_record.Step);
        var stats = new List<MicroBatchStats>();
        double gradNorm = 0;
        int batch = rollout.Size, miniSize = batch / _spec.NumMiniBatches;
        for (int epoch = 0; epoch < _spec.NumPpoEpochs; epoch++)
        {
            var order = Permutation(stepNumber, epoch, batch);
            for (int mini = 0; mini < _spec.NumMiniBatches; mini++)
            {
                for (int micro = 0; micro < _spec.Training.GradientAccumulation; micro++)
                {
                    using var microScope = NewDisposeScope();
                    int start = mini * miniSize + micro * MicroBatchSize;
                    var indices = torch.tensor(order.AsSpan(start, MicroBatchSize).ToArray(), dtype: ScalarType.Int64, device: rollout.Batch.Ids.device);
                    var (loss, s) = _objective.Loss(_models, rollout, indices, _rollout.Temperature);
                    if (!double.IsFinite(s.PolicyLoss) || !double.IsFinite(s.ValueLoss))
                    {
                        optimizer.ZeroGrad();
                        return RunOutcome.Failed($"Training stopped at step {stepNumber} of {totalSteps}: the loss is not finite (policy {s.PolicyLoss}, " +
                            $"value {s.ValueLoss}). Lower the learning rate or the clip ranges, or check the reward model's scores.", _record.LastCheckpoint);
                    }
                    // Gradient accumulation: the mini-batch loss is the mean of its micro-batch losses.
                    (loss / _spec.Training.GradientAccumulation).backward();
                    stats.Add(s);
                }
                // Value warm-up (freezeActorSteps): the policy's gradients are dropped, so only the value function learns.
                if (stepNumber <= FrozenPolicySteps)
                    foreach (var p in _models.PolicyPart.Parameters)
                    {
                        using var g = p.Parameter.grad;
                        if (g is not null) p.Parameter.grad = null;
                    }
                gradNorm = GradientClipping.ClipByTotalNorm(parameters, _spec.Training.MaxGradNorm);
                if (!double.IsFinite(gradNorm))
                {
                    optimizer.ZeroGrad();
                    return RunOutcome.Failed($"Training stopped at step {stepNumber} of {totalSteps}: the gradient norm is {gradNorm}. Lower the learning rate.", _record.LastCheckpoint);
                }
                optimizer.Step(learningRate);
                optimizer.ZeroGrad();
            }
        }
        double seconds = stepClock.Elapsed.TotalSeconds;

        _record.Step = stepNumber;
        _episode += batch;
        _record.TokensSeen += rollout.ResponseTokens;
        metrics[MetricNames.PolicyApproxKl] = stats.Average(s => s.ApproxKl);
        metrics[MetricNames.PolicyClipFrac] = stats.Average(s => s.ClipFraction);
        metrics[MetricNames.LossPolicy] = stats.Average(s => s.PolicyLoss);
        metrics[MetricNames.PolicyEntropy] = stats.Average(s => s.Entropy);
        metrics[MetricNames.ValueRatio] = stats.Average(s => s.Ratio);
        if (_models.HasValues)
        {
            metrics[MetricNames.LossValue] = stats.Average(s => s.ValueLoss);
            metrics[MetricNames.ValueClipFrac] = stats.Average(s => s.ValueClipFraction);
        }
        metrics[MetricNames.NumEosTokens] = rollout.EndedWithStop.sum().item<long>();
        metrics[MetricNames.LearningRate] = learningRate;
        metrics[MetricNames.GradNorm] = gradNorm;
        metrics[MetricNames.Episode] = _episode;
        metrics[MetricNames.Epoch] = (double)_episode / _objective.SamplesPerPrompt / _prompts.Count;
        metrics[MetricNames.TokensPerSecond] = rollout.ResponseTokens / seconds;
        metrics[EpisodesPerSecondMetric] = batch / seconds;
        metrics[KlCoefMetric] = _kl.Value;
        var times = rollout.Times;
        metrics[RolloutSecondsMetric] = times.Sampling;
        if (times.PolicyForward is double policyForward) metrics[PolicyForwardSecondsMetric] = policyForward;
        metrics[ReferenceSecondsMetric] = times.Reference;
        if (times.ValueModel is double valueModel) metrics[ValueSecondsMetric] = valueModel;
        metrics[ScoringSecondsMetric] = times.Scoring;
        metrics[ExperienceSecondsMetric] = experienceSeconds;
        metrics[OptimizeSecondsMetric] = seconds - experienceSeconds;
        metrics[PeakMemoryMetric] = PeakMemoryMegabytes();
        if (_arithmeticPrompts)
            metrics[TrueScoreMetric] = rollout.Prompts.Select((p, i) => ArithmeticTask.TryParse(p, out _) ? ArithmeticScorer.Score(p, rollout.Responses[i]) : 0).Average();
        _record.Report(metrics);

        foreach (var warning in _guards.Check(_record.Step, new GuardInput(metrics[MetricNames.ObjectiveKl], metrics[MetricNames.ObjectiveScores],
                     metrics[MetricNames.PolicyEntropy], rollout.Responses)))
            _reporter.Event(warning);
        // Ziegler et al.: the coefficient for the next step follows the KL measured in this one.
        _kl.Update(metrics[MetricNames.ObjectiveKl], batch);

        if (_record.Step == 1 || _record.Step % _spec.SampleSteps == 0 || _record.Step == totalSteps) ReportSamples(rollout, prompts, stepNumber);
        return null;
    }

    /// <summary>The seed of step <paramref name="step"/>'s sampling: a function of the run's seed and the step alone.</summary>
    public long StepSeed(long step) => unchecked(_context.Spec.Seed * 1_000_003L + step);

    /// <summary>The row order of PPO epoch <paramref name="epoch"/> of step <paramref name="step"/> (TRL np.random.permutation,
    /// seeded here so that a resumed run repeats it).</summary>
    public int[] Permutation(long step, int epoch, int size)
    {
        using var generator = new torch.Generator(unchecked((ulong)(_context.Spec.Seed * 7_919L + step * 131L + epoch)));
        using var perm = torch.randperm(size, generator: generator);
        return perm.data<long>().Select(i => (int)i).ToArray();
    }

    // Policy and reference responses to the first prompts of the rollout, each with its score.
    private void ReportSamples(Rollout rollout, IReadOnlyList<RlPrompt> rolloutPrompts, long step)
    {
        int count = Math.Min(SampleRows, rollout.Size);
        var prompts = rolloutPrompts.Take(count).ToList();
        IReadOnlyList<string> refTexts;
        float[] refScores;
        using (var scope = NewDisposeScope())
        using (var noGrad = no_grad())
        using (_models.UseReference(out var reference))
        {
            var (batch, real) = RolloutSampler.Sample(reference, prompts, _rollout, StepSeed(step));
            using var ids = batch.Ids;
            using var mask = batch.AttentionMask;
            using var realMask = real;   // detached by Sample: disposed here
            refTexts = RolloutSampler.Decode(_models, batch.Responses, real);
            var scores = _models.Scorer.Score(batch, prompts.Select(p => p.Text).ToList(), refTexts);
            refScores = scores.cpu().data<float>().ToArray();
        }
        var policyScores = rollout.Scores.cpu().data<float>().ToArray();
        var rows = Enumerable.Range(0, count).Select(i => new SampleRow(i, rollout.Prompts[i], rollout.Responses[i], policyScores[i],
            refTexts[i], refScores[i], SampleTable)).ToList();
        _reporter.Samples(step, rows);
    }

    private RunOutcome Cancel(IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, long totalSteps, ProgressMeter meter, bool rewind = false)
    {
        if (rewind && _positionBeforeStep is { } before) sampler.Restore(before);
        optimizer.ZeroGrad();
        return _record.Cancel(totalSteps, meter, () => Save(sampler, schedule, optimizer, totalSteps));
    }

    private RunOutcome? Save(IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer, long totalSteps)
    {
        var (guardEntropy, guardScore) = _guards.Baseline;
        return _record.Save(sampler, (double)_episode / _objective.SamplesPerPrompt / _prompts.Count, totalSteps, schedule, optimizer, folder =>
        {
            _models.PolicyPart.SaveCheckpoint(folder, _spec.Method);
            _models.ValuePart?.SaveCheckpoint(Path.Combine(folder, RlCheckpoint.ValueFolder), _spec.Method);
            _models.ValueHead?.Save(folder);
            new RlState(1, _record.Step, _episode, _kl.Value, guardEntropy, guardScore).Save(folder);
        });
    }

    private RunOutcome? Resume(string folder, IndexSampler sampler, LearningRateSchedule schedule, AdamWOptimizer optimizer) =>
        _record.Resume(folder, sampler, schedule, optimizer, "prompts", (checkpoint, state) =>
        {
            var rl = RlState.Load(checkpoint);
            if (rl.Step != state.GlobalStep) throw new CheckpointException($"{RlState.FileName} is at step {rl.Step}, the trainer state at {state.GlobalStep}");
            _models.PolicyPart.LoadCheckpoint(checkpoint);
            if (_models.ValuePart is not null)
            {
                var valueFolder = Path.Combine(checkpoint, RlCheckpoint.ValueFolder);
                if (!Directory.Exists(valueFolder)) throw new CheckpointException($"{valueFolder}: missing (PPO checkpoints hold the value model)");
                _models.ValuePart.LoadCheckpoint(valueFolder);
            }
            _models.ValueHead?.Load(checkpoint);
            _kl.Restore(rl.KlCoef);
            _guards.RestoreBaseline(rl.GuardEntropy, rl.GuardScore);
            _episode = rl.Episode;
            return $"KL coefficient {_kl.Value:G4}";
        });

    /// <summary>The process's resident-memory high-water mark (VmHWM in /proc/self/status) in MB; the managed heap's
    /// peak where /proc is not available.</summary>
    public static double PeakMemoryMegabytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0);
    }
}
