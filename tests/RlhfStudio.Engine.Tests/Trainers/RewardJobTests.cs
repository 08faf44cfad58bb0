using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Training;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Trainers;

[Collection(SerialTrainingCollection.Name)]
public class RewardJobTests(TrainerWorkspace workspace) : IClassFixture<TrainerWorkspace>
{
    [Fact]
    public void Pooling_reads_the_last_real_token_even_when_it_is_the_eos_that_pads_the_batch()
    {
        var tokenizer = TextTokenizer.BuiltIn();
        int eos = tokenizer.EosId!.Value;
        Assert.Equal(eos, tokenizer.PadId);
        using var model = ModelLoader.LoadScoreModel(workspace.ModelFolder, seed: 5);
        model.eval();
        var shortRow = PromptTemplates.StackLlama.Tokenize(tokenizer, "What is 1 + 2?", "3").InputIds;
        var longRow = PromptTemplates.StackLlama.Tokenize(tokenizer, "What is 1 + 2?", "3, I think, but I am not sure").InputIds;
        Assert.Equal(eos, shortRow[^1]);

        var batched = RewardScoring.Score(model, [shortRow, longRow], padId: eos);
        var alone = RewardScoring.Score(model, [shortRow], padId: eos);
        Assert.Equal(alone[0], batched[0], 1e-5f);

        // The reward is read at the EOS itself: transformers' pad-id rule would read the token before it instead.
        using var noGrad = no_grad();
        using var ids = torch.tensor(shortRow.Select(i => (long)i).ToArray(), [1, shortRow.Count]);
        using var scores = model.Forward(ids);
        Assert.Equal(scores[0, shortRow.Count - 1, 0].item<float>(), alone[0], 1e-5f);
        using var hfIndex = ScoreModel.LastNonPadIndex(ids, eos);
        Assert.Equal(shortRow.Count - 2, hfIndex.item<long>());
    }

    [Fact]
    public void Reward_training_lowers_the_loss_reports_trl_metrics_and_a_score_table_and_writes_a_sequence_classifier()
    {
        using var dir = new TempDir();
        var spec = workspace.Reward(maxSteps: 12) with
        {
            Training = workspace.Reward().Training with { MaxSteps = 12, BatchSize = 9, LearningRate = 1e-2, Schedule = LrSchedule.Constant },
        };
        var (outcome, reporter) = JobRecorder.Run(spec, dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        var losses = reporter.Series(MetricNames.TrainLoss);
        Assert.True(losses.Values.Skip(9).Average() < losses.Values.Take(3).Average() * 0.8, string.Join(", ", losses.Values));
        foreach (var name in new[] { MetricNames.RewardsChosen, MetricNames.RewardsRejected, MetricNames.RewardsMargins, MetricNames.RewardsAccuracies,
                     MetricNames.EvalLoss, MetricNames.EvalAccuracy, RewardTask.EvalChosenMetric, RewardTask.EvalRejectedMetric, RewardTask.EvalMarginsMetric })
            Assert.True(double.IsFinite(reporter.Last(name)), name);
        Assert.True(reporter.Last(MetricNames.RewardsMargins) > 0);

        var (_, rows) = Assert.Single(reporter.SampleLog);
        Assert.Equal(3, rows.Count);   // every eval pair (fewer than the table's 8)
        Assert.All(rows, r =>
        {
            Assert.Equal("scores", r.Table);
            Assert.NotNull(r.Reference);
            Assert.NotNull(r.Score);
            Assert.NotNull(r.ReferenceScore);
        });

        using var model = ModelLoader.LoadScoreModel(outcome.FinalModel!);
        Assert.Equal(1, model.NumLabels);
        Assert.Equal("LlamaForSequenceClassification", ModelLoader.ReadConfig(outcome.FinalModel!).Architectures[0]);
        Assert.Equal(TrainingMethod.Reward, ModelRecord.Read(outcome.FinalModel!)!.Method);
        // Every parameter of the trunk and the fresh score head moved.
        using var initial = ModelLoader.LoadScoreModel(workspace.ModelFolder, numLabels: 1, seed: spec.Seed);
        var before = initial.HfWeights();
        foreach (var (name, weight) in model.HfWeights())
            Assert.False(TestModels.Same(before[name], weight), $"{name} did not change");
    }

    [Theory]
    [InlineData(AdapterKind.Full)]
    [InlineData(AdapterKind.Lora)]
    public void Resuming_reward_training_reproduces_the_uninterrupted_curve(AdapterKind adapter)
    {
        using var dir = new TempDir();
        var spec = workspace.Reward(maxSteps: 6, adapter: adapter, saveSteps: 0);
        var (full, fullReporter) = JobRecorder.Run(spec, dir["full"]);
        Assert.Equal(RunEndState.Completed, full.State);
        var (cancelled, _) = JobRecorder.Run(spec, dir["split"], cancelAfterStep: 2);
        Assert.Equal(RunEndState.Cancelled, cancelled.State);
        var (resumed, resumedReporter) = JobRecorder.Run(spec, dir["split"], resumeFrom: cancelled.LastCheckpoint);
        Assert.Equal(RunEndState.Completed, resumed.State);
        var expected = fullReporter.Series(MetricNames.TrainLoss);
        var actual = resumedReporter.Series(MetricNames.TrainLoss);
        Assert.Equal([3L, 4L, 5L, 6L], actual.Keys);
        foreach (var step in actual.Keys) Assert.Equal(expected[step], actual[step]);
        Assert.Equal(fullReporter.Last(MetricNames.EvalAccuracy), resumedReporter.Last(MetricNames.EvalAccuracy));
        if (adapter == AdapterKind.Lora)
        {
            // The adapter checkpoint carries the score head, trained in full (PEFT's modules_to_save).
            using var file = SafeTensorsFile.Open(Path.Combine(cancelled.LastCheckpoint!, RlhfStudio.Engine.Adapters.Lora.WeightsFileName));
            Assert.Contains("base_model.model.score.weight", file.Tensors.Keys);
        }
    }

    [Fact]
    public void A_dataset_without_pairs_fails_with_a_message_naming_what_reward_modelling_needs()
    {
        using var dir = new TempDir();
        var (outcome, _) = JobRecorder.Run(workspace.Reward(dataset: workspace.SftData), dir.Path);
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("sft.jsonl", outcome.Message);
        Assert.Contains("reward modelling needs preference pairs", outcome.Message);
    }
}
