using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Training;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.Trainers;

[Collection(SerialTrainingCollection.Name)]
public class SftJobTests(TrainerWorkspace workspace) : IClassFixture<TrainerWorkspace>
{
    [Fact]
    public void The_engine_registers_the_sft_and_reward_jobs()
    {
        Assert.IsType<SftJob>(TrainingJobs.Create(new SftSpec()));
        Assert.IsType<RewardJob>(TrainingJobs.Create(new RewardSpec()));
    }

    [Fact]
    public void Full_fine_tuning_lowers_the_loss_moves_every_parameter_and_writes_a_loadable_final_folder()
    {
        using var dir = new TempDir();
        var spec = workspace.Sft(maxSteps: 12) with
        {
            Training = workspace.Sft().Training with { MaxSteps = 12, BatchSize = 9, LearningRate = 1e-2, Schedule = LrSchedule.Constant },
        };
        var (outcome, reporter) = JobRecorder.Run(spec, dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        var losses = reporter.Series(MetricNames.TrainLoss);
        Assert.Equal(12, losses.Count);
        Assert.True(losses.Values.Skip(9).Average() < losses.Values.Take(3).Average() * 0.8, string.Join(", ", losses.Values));
        foreach (var name in new[] { MetricNames.LearningRate, MetricNames.GradNorm, MetricNames.MeanTokenAccuracy, MetricNames.TokensPerSecond, MetricNames.Epoch,
                     MetricNames.EvalLoss, MetricNames.EvalMeanTokenAccuracy })
            Assert.True(double.IsFinite(reporter.Last(name)), name);
        // A sample table for the first evaluation prompts, at the final evaluation.
        var (step, rows) = Assert.Single(reporter.SampleLog);
        Assert.Equal(12, step);
        Assert.Equal(2, rows.Count);
        Assert.All(rows, r => Assert.Equal("eval", r.Table));

        Assert.Equal(Path.Combine(dir.Path, "final"), outcome.FinalModel);
        using var initial = ModelLoader.Load(workspace.ModelFolder);
        using var trained = ModelLoader.Load(outcome.FinalModel!);
        var before = initial.HfWeights();
        foreach (var (name, weight) in trained.HfWeights())
            Assert.False(TestModels.Same(before[name], weight), $"{name} did not change");
        Assert.Equal(TextTokenizer.BuiltIn().VocabSize, TextTokenizer.Load(outcome.FinalModel!).VocabSize);
        var record = ModelRecord.Read(outcome.FinalModel!)!;
        Assert.Equal(PromptTemplateNames.StackLlama, record.Template);
        Assert.Equal(TrainingMethod.Sft, record.Method);
        // The last checkpoint holds the same weights as the final model.
        using var checkpoint = ModelLoader.Load(outcome.LastCheckpoint!);
        Assert.All(checkpoint.HfWeights(), kv => Assert.True(TestModels.Same(kv.Value, trained.HfWeights()[kv.Key])));
    }

    [Fact]
    public void Lora_changes_only_the_adapted_projections_and_saves_merged_weights_and_a_peft_adapter()
    {
        using var dir = new TempDir();
        var (outcome, reporter) = JobRecorder.Run(workspace.Sft(maxSteps: 4, adapter: AdapterKind.Lora), dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Contains(reporter.Events, e => e.Message.StartsWith("trainable params:", StringComparison.Ordinal) && e.Message.Contains("LoRA r=4"));

        using var initial = ModelLoader.Load(workspace.ModelFolder);
        using var merged = ModelLoader.Load(outcome.FinalModel!);
        var before = initial.HfWeights();
        foreach (var (name, weight) in merged.HfWeights())
        {
            bool adapted = name.EndsWith("q_proj.weight", StringComparison.Ordinal) || name.EndsWith("v_proj.weight", StringComparison.Ordinal);
            Assert.True(adapted != TestModels.Same(before[name], weight), $"{name}: adapted {adapted}");
        }
        // The PEFT adapter on the base model gives the merged model's logits.
        Lora.Load(initial, Path.Combine(outcome.FinalModel!, "adapter"));
        initial.eval();   // no LoRA dropout
        using var ids = TestModels.Ids([1, 40, 41, 42, 7]);
        using var noGrad = no_grad();
        using var a = initial.Forward(ids);
        using var b = merged.Forward(ids);
        Assert.True(TestModels.MaxDiff(a, b) < 1e-4, $"max diff {TestModels.MaxDiff(a, b)}");
        // The checkpoint holds only the adapter.
        Assert.True(File.Exists(Path.Combine(outcome.LastCheckpoint!, Lora.WeightsFileName)));
        Assert.False(File.Exists(Path.Combine(outcome.LastCheckpoint!, "model.safetensors")));
    }

    [Theory]
    [InlineData(AdapterKind.Full)]
    [InlineData(AdapterKind.Lora)]
    [InlineData(AdapterKind.Freeze)]
    public void Cancelling_keeps_a_checkpoint_and_resuming_reproduces_the_uninterrupted_curve(AdapterKind adapter)
    {
        using var dir = new TempDir();
        var spec = workspace.Sft(maxSteps: 6, adapter: adapter, saveSteps: 0);
        var (full, fullReporter) = JobRecorder.Run(spec, dir["full"]);
        Assert.Equal(RunEndState.Completed, full.State);

        var (cancelled, _) = JobRecorder.Run(spec, dir["split"], cancelAfterStep: 3);
        Assert.Equal(RunEndState.Cancelled, cancelled.State);
        Assert.EndsWith("checkpoint-3", cancelled.LastCheckpoint);
        if (adapter != AdapterKind.Lora)
        {
            using var loadable = ModelLoader.Load(cancelled.LastCheckpoint!);   // a full checkpoint is a model folder
        }
        var (resumed, resumedReporter) = JobRecorder.Run(spec, dir["split"], resumeFrom: cancelled.LastCheckpoint);
        Assert.Equal(RunEndState.Completed, resumed.State);

        var expected = fullReporter.Series(MetricNames.TrainLoss);
        var actual = resumedReporter.Series(MetricNames.TrainLoss);
        Assert.Equal([4L, 5L, 6L], actual.Keys);
        foreach (var step in actual.Keys) Assert.Equal(expected[step], actual[step]);
        Assert.Equal(fullReporter.Last(MetricNames.EvalLoss), resumedReporter.Last(MetricNames.EvalLoss));
    }

    [Fact]
    public void Cancelling_during_evaluation_keeps_a_checkpoint_of_the_step_reached()
    {
        using var dir = new TempDir();
        var spec = workspace.Sft(maxSteps: 6, saveSteps: 0) with
        {
            Checkpoints = new CheckpointSettings { LoggingSteps = 1, EvalSteps = 3, SaveSteps = 0, KeepLast = 0 },
        };
        // The step-3 metrics arrive before its evaluation, whose sample generation then sees the cancelled token.
        var (cancelled, reporter) = JobRecorder.Run(spec, dir.Path, cancelAfterStep: 3);
        Assert.Equal(RunEndState.Cancelled, cancelled.State);
        Assert.EndsWith("checkpoint-3", cancelled.LastCheckpoint);
        Assert.DoesNotContain(reporter.Events, e => e.Level == RunEventLevel.Error);
    }

    [Fact]
    public void Packing_trains_on_constant_length_blocks()
    {
        using var dir = new TempDir();
        var spec = workspace.Sft(maxSteps: 2, packing: true) with { MaxLength = 16 };
        var (outcome, reporter) = JobRecorder.Run(spec, dir.Path);
        Assert.Equal(RunEndState.Completed, outcome.State);
        Assert.Contains(reporter.Events, e => e.Message.StartsWith("packed 9 sequences into", StringComparison.Ordinal) && e.Message.Contains("blocks of 16 tokens"));
        // Blocks of 16 with no padding: 3 rows x 16 tokens per step.
        Assert.True(double.IsFinite(reporter.Last(MetricNames.TrainLoss)));
    }

    [Fact]
    public void A_dataset_in_the_wrong_format_fails_with_a_message_naming_what_sft_needs()
    {
        using var dir = new TempDir();
        var (outcome, _) = JobRecorder.Run(workspace.Sft(dataset: workspace.PromptOnlyData), dir.Path);
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("prompts.jsonl", outcome.Message);
        Assert.Contains("SFT needs", outcome.Message);
    }

    [Fact]
    public void A_missing_model_folder_or_pickle_weights_fail_with_clear_messages()
    {
        using var dir = new TempDir();
        var missing = workspace.Sft() with { Model = ModelRef.FromPath(dir["nowhere"]) };
        var (outcome, _) = JobRecorder.Run(missing, dir["out1"]);
        Assert.Equal(RunEndState.Failed, outcome.State);
        Assert.Contains("model folder not found", outcome.Message);

        Directory.CreateDirectory(dir["pickle"]);
        File.Copy(Path.Combine(workspace.ModelFolder, "config.json"), Path.Combine(dir["pickle"], "config.json"));
        File.WriteAllBytes(Path.Combine(dir["pickle"], "pytorch_model.bin"), [1, 2, 3]);
        var (pickle, _) = JobRecorder.Run(workspace.Sft() with { Model = ModelRef.FromPath(dir["pickle"]) }, dir["out2"]);
        Assert.Equal(RunEndState.Failed, pickle.State);
        Assert.Contains("pickle", pickle.Message);

        var unknown = workspace.Sft() with { Model = ModelRef.FromPreset("huge") };
        Assert.Contains("unknown model preset \"huge\"", JobRecorder.Run(unknown, dir["out3"]).Outcome.Message);
        var tooDeep = workspace.Sft(adapter: AdapterKind.Freeze) with { Adapter = new AdapterSettings { Kind = AdapterKind.Freeze, FrozenLayers = 5 } };
        Assert.Contains("only 2 layers", JobRecorder.Run(tooDeep, dir["out4"]).Outcome.Message);
    }
}
