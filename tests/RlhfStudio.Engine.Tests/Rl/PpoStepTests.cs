using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Trainers;
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Trainers.Rl;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Rl;

public class PpoStepTests
{
    private static PpoObjective Ppo() => new(vfCoef: 0.1, clipRange: 0.2, clipRangeValue: 0.2, gamma: 1, lam: 0.95, whitenRewards: false);

    /// <summary>The loss of the first update of a step: targets prepared, then a permuted micro-batch of the same size as
    /// the rollout's forward chunks (rows 3 and 0), as the first PPO update sees it.</summary>
    private static (Tensor Loss, MicroBatchStats Stats) FirstUpdate(PpoObjective ppo, RlModels models, Rollout rollout)
    {
        ppo.Prepare(rollout, klCoef: 0.05);
        using var rows = torch.tensor(new long[] { 3, 0 });
        return ppo.Loss(models, rollout, rows, temperature: 0.7);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Log_probs_from_the_sampling_loop_match_the_recomputed_ones_in_fp32(bool lora)
    {
        // TRL's route (recomputeLogProbs false): the rollout keeps the sampling loop's log-probabilities. In fp32 they are
        // the forward's up to rounding, so the first ratio is 1 to 1e-5 and nothing is clipped.
        using var models = RlTestKit.Models(lora);
        var settings = RlTestKit.Settings(forwardBatch: 2) with { LogProbsFromSampling = true };
        using var sampled = RolloutSampler.Collect(models, RlTestKit.Prompts(4), settings, seed: 11);
        using var recomputed = RolloutSampler.Collect(models, RlTestKit.Prompts(4), settings with { LogProbsFromSampling = false }, seed: 11);
        Assert.True(sampled.Batch.Ids.equal(recomputed.Batch.Ids).all().item<bool>());          // the same responses
        var gap = (sampled.LogProbs - recomputed.LogProbs).abs().max().item<float>();
        Assert.True(gap < 1e-4, $"log-probs differ by {gap}");
        Assert.True(sampled.LogProbs.masked_select(sampled.Real.logical_not()).eq(Advantages.InvalidLogProb).all().item<bool>());
        using var ppo = Ppo();
        var (loss, stats) = FirstUpdate(ppo, models, sampled);
        loss.Dispose();
        Assert.Equal(1.0, stats.Ratio, 4);
        Assert.Equal(0.0, stats.ClipFraction);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void First_minibatch_has_ratio_one_no_approx_kl_and_no_clipping(bool lora)
    {
        using var models = RlTestKit.Models(lora);
        using var rollout = RolloutSampler.Collect(models, RlTestKit.Prompts(4), RlTestKit.Settings(forwardBatch: 2), seed: 11);
        using var ppo = Ppo();
        var (loss, stats) = FirstUpdate(ppo, models, rollout);
        loss.Dispose();
        Assert.Equal(1.0, stats.Ratio, 6);
        Assert.True(stats.ApproxKl < 1e-10, $"approx KL {stats.ApproxKl}");
        Assert.Equal(0.0, stats.ClipFraction);
        Assert.Equal(0.0, stats.ValueClipFraction);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_value_head_on_the_policy_keeps_the_invariants_and_its_loss_trains_head_and_trunk(bool lora)
    {
        using var models = RlTestKit.Models(lora, sharedValueHead: true);
        Assert.Null(models.Value);
        Assert.True(models.HasValues);
        Assert.Equal(0f, models.ValueHead!.summary.weight.abs().max().item<float>());   // a fresh head values every state at 0
        using (no_grad()) models.ValueHead.summary.weight.normal_(0, 0.1);            // a trained one, for the checks below
        using var rollout = RolloutSampler.Collect(models, RlTestKit.Prompts(4), RlTestKit.Settings(forwardBatch: 2), seed: 11);
        Assert.NotNull(rollout.Values);
        Assert.True(rollout.Values!.masked_select(rollout.Real.logical_not()).eq(0).all().item<bool>());
        Assert.True(rollout.Values.abs().sum().item<float>() > 0);
        using var ppo = Ppo();
        var (loss, stats) = FirstUpdate(ppo, models, rollout);
        // Exact log-probabilities from the policy forward that also gave the values: ratio 1, nothing clipped.
        Assert.Equal(1.0, stats.Ratio, 6);
        Assert.True(stats.ApproxKl < 1e-10, $"approx KL {stats.ApproxKl}");
        Assert.Equal(0.0, stats.ValueClipFraction);
        Assert.True(stats.ValueLoss > 0);
        loss.backward();
        Assert.True(models.ValueHead!.summary.weight.grad!.abs().sum().item<float>() > 0);
        // (With LoRA, A's gradient is 0 while B = 0: some trained policy parameter must have one.)
        Assert.Contains(models.PolicyPart.Parameters, p => p.Parameter.grad is { } g && g.abs().sum().item<float>() > 0);
        Assert.Contains(models.TrainableParameters(), p => p.Name == "value_head.summary.weight");
        loss.Dispose();

        // TRL's route: values and log-probabilities both read in the sampling loop (no policy forward) match the
        // forward's in fp32; 40 tokens cross the sampling loop's 32-step readout blocks.
        using var sampled = RolloutSampler.Collect(models, RlTestKit.Prompts(4), RlTestKit.Settings(maxNewTokens: 40, forwardBatch: 2) with { LogProbsFromSampling = true }, seed: 12);
        using var recomputed = RolloutSampler.Collect(models, RlTestKit.Prompts(4), RlTestKit.Settings(maxNewTokens: 40, forwardBatch: 2), seed: 12);
        Assert.Equal(40, sampled.Batch.ResponseLength);
        Assert.True(sampled.Batch.Ids.equal(recomputed.Batch.Ids).all().item<bool>());
        Assert.True((sampled.Values! - recomputed.Values!).abs().max().item<float>() < 1e-4);
        Assert.True((sampled.LogProbs - recomputed.LogProbs).abs().max().item<float>() < 1e-4);
        Assert.True(sampled.Values!.masked_select(sampled.Real.logical_not()).eq(0).all().item<bool>());
        // The phases that ran, and only those: this route's rollout has no policy forward and no value model's pass.
        Assert.Null(sampled.Times.PolicyForward);
        Assert.Null(sampled.Times.ValueModel);
        Assert.True(sampled.Times.Sampling > 0 && sampled.Times.Reference > 0);
        Assert.True(recomputed.Times.PolicyForward > 0);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]   // bf16 compute: the frozen copy's run-long bf16 weights compute what the policy's per-rollout ones do
    public void Kl_is_zero_when_the_policy_equals_the_reference(bool lora, bool bf16)
    {
        using var models = RlTestKit.Models(lora, computeDType: bf16 ? ScalarType.BFloat16 : null);
        using var rollout = RolloutSampler.Collect(models, RlTestKit.Prompts(4), RlTestKit.Settings(), seed: 2);
        Assert.True(rollout.LogProbs.eq(rollout.RefLogProbs).all().item<bool>());
        using var ppo = Ppo();
        var metrics = ppo.Prepare(rollout, klCoef: 0.05);
        Assert.Equal(0.0, metrics[MetricNames.ObjectiveKl]);
        Assert.Equal(0.0, metrics[MetricNames.ObjectiveNonScoreReward]);

        // Any change to the LoRA B matrices (or to the policy copy) makes the policy differ from the reference.
        using (no_grad())
        {
            if (lora) foreach (var (_, p) in Lora.AdapterParameters(models.Policy)) p.add_(0.05);
            else foreach (var p in models.Policy.parameters()) p.mul_(1.05);
        }
        using var moved = RolloutSampler.Collect(models, RlTestKit.Prompts(4), RlTestKit.Settings(), seed: 2);
        Assert.False(moved.LogProbs.eq(moved.RefLogProbs).all().item<bool>());
    }

    [Fact]
    public void A_frozen_reference_keeps_its_inference_weights_for_the_run_and_refuses_a_new_compute_dtype()
    {
        using var models = RlTestKit.Models(lora: false, computeDType: ScalarType.BFloat16);
        var reference = models.ReferenceCopy!;
        var attention = ((LlamaModel)reference.Trunk).layers[0].self_attn;
        Assert.Equal(ScalarType.BFloat16, attention.InferenceQkv!.Value.Weight.dtype);
        using (reference.UseInferenceWeights()) { }                       // a rollout's own scope nests inside the run's
        Assert.NotNull(attention.InferenceQkv);
        Assert.Throws<InvalidOperationException>(() => reference.ComputeDType = ScalarType.Float32);
        Assert.Null(((LlamaModel)models.Policy.Trunk).layers[0].self_attn.InferenceQkv);   // the trained policy keeps none
    }

    [Fact]
    public void Padding_after_the_end_never_changes_the_losses()
    {
        using var models = RlTestKit.Models(lora: true);
        var prompts = RlTestKit.Prompts(4);
        var settings = RlTestKit.Settings(forwardBatch: 4);
        var (batch, real) = RolloutSampler.Sample(models.Policy, prompts, settings, seed: 4);
        long b = batch.Ids.shape[0], extra = 3;
        var paddedBatch = new SequenceBatch(
            torch.cat([batch.Ids, torch.full([b, extra], settings.PadId, dtype: ScalarType.Int64)], 1),
            torch.cat([batch.AttentionMask, torch.zeros([b, extra], dtype: ScalarType.Bool)], 1), batch.PromptLength);
        var paddedReal = torch.cat([real, torch.zeros([b, extra], dtype: ScalarType.Bool)], 1);

        using var plain = RolloutSampler.Score(models, prompts, batch, real, settings);
        using var padded = RolloutSampler.Score(models, prompts, paddedBatch, paddedReal, settings);
        using var ppo1 = Ppo();
        using var ppo2 = Ppo();
        var m1 = ppo1.Prepare(plain, 0.05);
        var m2 = ppo2.Prepare(padded, 0.05);
        Assert.Equal(m1[MetricNames.ObjectiveScores], m2[MetricNames.ObjectiveScores], 6);
        Assert.Equal(m1[MetricNames.ObjectiveEntropy], m2[MetricNames.ObjectiveEntropy], 4);
        using var rows = torch.tensor(new long[] { 0, 1, 2, 3 });
        var (l1, s1) = ppo1.Loss(models, plain, rows, 0.7);
        var (l2, s2) = ppo2.Loss(models, padded, rows, 0.7);
        Assert.Equal(l1.item<float>(), l2.item<float>(), 4);
        Assert.Equal(s1.PolicyLoss, s2.PolicyLoss, 4);
        Assert.Equal(s1.ValueLoss, s2.ValueLoss, 4);
        Assert.Equal(s1.Entropy, s2.Entropy, 4);
        Assert.True(ppo2.Advantages!.narrow(1, plain.Real.shape[1], extra).eq(0).all().item<bool>());
        l1.Dispose();
        l2.Dispose();
    }

    [Fact]
    public void Missing_eos_penalty_lowers_only_responses_without_eos()
    {
        using var models = RlTestKit.Models(lora: true, withValue: false);
        var prompts = RlTestKit.Prompts(2);
        long eos = RlTestKit.Tokenizer.EosId!.Value, pad = RlTestKit.Tokenizer.PadId!.Value;
        long four = RlTestKit.Tokenizer.Encode("4")[0];
        (SequenceBatch, Tensor) Handmade()
        {
            var (ids, mask) = RlhfStudio.Engine.Generation.PromptBatch.LeftPad(prompts.Select(p => p.Ids).ToList(), pad);
            // Row 0 says "44" and stops; row 1 says "4444" and runs out of tokens.
            var responses = torch.tensor(new[] { four, four, eos, pad, four, four, four, four }, [2, 4]);
            var real = torch.tensor(new[] { true, true, true, false, true, true, true, true }, [2, 4]);
            return (new SequenceBatch(torch.cat([ids, responses], 1), torch.cat([mask.to(ScalarType.Bool), real], 1), ids.shape[1]), real);
        }
        var (b1, r1) = Handmade();
        var (b2, r2) = Handmade();
        using var without = RolloutSampler.Score(models, prompts, b1, r1, RlTestKit.Settings());
        using var with = RolloutSampler.Score(models, prompts, b2, r2, RlTestKit.Settings(missingEosPenalty: 2.0));
        Assert.Equal([true, false], without.EndedWithStop.data<bool>().ToArray());
        var s0 = without.Scores.data<float>().ToArray();
        var s1 = with.Scores.data<float>().ToArray();
        Assert.Equal(s0[0], s1[0]);
        Assert.Equal(s0[1] - 2.0, s1[1], 5);
    }

    [Theory]
    [InlineData(AdapterKind.Lora)]
    [InlineData(AdapterKind.Full)]
    public void A_ppo_step_changes_only_trainable_parameters_and_reports_finite_metrics(AdapterKind kind)
    {
        bool lora = kind == AdapterKind.Lora;
        using var models = RlTestKit.Models(lora);
        var spec = RlTestKit.PpoSpec(maxSteps: 1, adapter: kind);
        var before = Snapshot(models);
        var reporter = new JobRecorder();
        using var outputFolder = new TempDir();
        var output = outputFolder.Path;
        var trainer = new RlTrainer(new RunContext(spec, output, reporter, CancellationToken.None), models,
            PromptSet.Of(RlTestKit.Prompts(8)), Ppo());
        var outcome = trainer.Run();
        Assert.Equal(RunEndState.Completed, outcome.State);

        var after = Snapshot(models);
        var trainable = models.TrainableParameters().Select(p => p.Name).ToHashSet();
        Assert.NotEmpty(trainable);
        foreach (var (name, value) in before)
        {
            bool changed = !value.eq(after[name]).all().item<bool>();
            if (trainable.Contains(name)) Assert.True(changed, $"{name} is trainable but did not change");
            else Assert.False(changed, $"{name} is frozen but changed");
        }
        if (!lora) Assert.Contains(before.Keys, k => k.StartsWith("reference.", StringComparison.Ordinal));

        var metrics = reporter.At(1);
        foreach (var name in new[] { MetricNames.ObjectiveKl, MetricNames.ObjectiveEntropy, MetricNames.ObjectiveScores, MetricNames.ObjectiveRlhfReward,
                     MetricNames.PolicyApproxKl, MetricNames.PolicyClipFrac, MetricNames.LossPolicy, MetricNames.LossValue, MetricNames.ValueClipFrac,
                     MetricNames.ValueRatio, MetricNames.PolicyEntropy, MetricNames.LearningRate, MetricNames.Episode, MetricNames.NumEosTokens,
                     MetricNames.TokensPerSecond, RlTrainer.PeakMemoryMetric })
            Assert.True(metrics.TryGetValue(name, out var v) && double.IsFinite(v), $"{name} missing or not finite");
        Assert.Equal(4, metrics[MetricNames.Episode]);
        Assert.Equal(0.0, metrics[MetricNames.ObjectiveKl]);   // the first rollout comes from the starting weights
        Assert.True(metrics[RlTrainer.PeakMemoryMetric] > 0);
        // The step's time by phase: sampling, the reference and value models' passes and scoring each took time (this
        // setup has a separate value model), and the parts fit inside everything before the optimisation.
        foreach (var name in new[] { RlTrainer.RolloutSecondsMetric, RlTrainer.ReferenceSecondsMetric, RlTrainer.ValueSecondsMetric, RlTrainer.ScoringSecondsMetric,
                     RlTrainer.OptimizeSecondsMetric })
            Assert.True(metrics[name] > 0, $"{name} = {metrics[name]}");
        double parts = metrics[RlTrainer.RolloutSecondsMetric] + metrics.GetValueOrDefault(RlTrainer.PolicyForwardSecondsMetric) + metrics[RlTrainer.ReferenceSecondsMetric] +
                       metrics[RlTrainer.ValueSecondsMetric] + metrics[RlTrainer.ScoringSecondsMetric];
        Assert.InRange(parts, 0, metrics[RlTrainer.ExperienceSecondsMetric]);
        var samples = Assert.Single(reporter.SampleLog);
        Assert.All(samples.Rows, r => Assert.NotNull(r.Reference));
        Directory.Delete(output, recursive: true);
        foreach (var t in before.Values.Concat(after.Values)) t.Dispose();
    }

    private static Dictionary<string, Tensor> Snapshot(RlModels models)
    {
        var all = new Dictionary<string, Tensor>();
        foreach (var (name, p) in models.Policy.named_parameters()) all["policy." + name] = p.detach().clone();
        foreach (var (name, p) in models.Value!.named_parameters()) all["value." + name] = p.detach().clone();
        foreach (var (name, p) in models.ReferenceCopy?.named_parameters() ?? []) all["reference." + name] = p.detach().clone();
        return all;
    }
}
