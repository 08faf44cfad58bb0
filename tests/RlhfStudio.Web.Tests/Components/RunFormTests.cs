using RlhfStudio.Engine.Jobs;
using RlhfStudio.Web.Components.Launch;

namespace RlhfStudio.Web.Tests.Components;

public class RunFormTests
{
    [Fact]
    public void Fields_build_the_spec_the_catalog_receives()
    {
        var form = new RunForm(RunPresets.For(RunPresets.QuickStart, TrainingMethod.Sft))
        {
            Name = "tiny sft",
            MaxSteps = 30,
            EvalSteps = 10,
            SaveSteps = 10,
            LearningRate = 5e-4,
            AdapterKind = AdapterKind.Lora,
            LoraRank = 8,
            TargetModules = "q_proj, k_proj ,v_proj",
            Packing = true,
        };
        var spec = Assert.IsType<SftSpec>(form.Spec);
        Assert.Equal("tiny sft", spec.Name);
        Assert.Equal(30, spec.Training.MaxSteps);
        Assert.Equal(10, spec.Checkpoints.EvalSteps);
        Assert.Equal(10, spec.Checkpoints.SaveSteps);
        Assert.Equal(5e-4, spec.Training.LearningRate);
        Assert.Equal(["q_proj", "k_proj", "v_proj"], spec.Adapter.TargetModules);
        Assert.Equal(8, spec.Adapter.Rank);
        Assert.True(spec.Packing);
        Assert.Empty(form.Validate());
        // the JSON the API and CLI take round-trips to the same record
        Assert.Equal(spec.ToJson(), RunSpec.FromJson(spec.ToJson()).ToJson());
    }

    [Fact]
    public void Rl_and_dpo_options_of_this_session_reach_the_spec_and_validate()
    {
        var ppo = new RunForm(RunPresets.For(RunPresets.QuickStart, TrainingMethod.Ppo)) { SharedValueHead = true, RecomputeLogProbs = false };
        var ppoSpec = Assert.IsType<PpoSpec>(ppo.Spec);
        Assert.True(ppoSpec.SharedValueHead);
        Assert.False(ppoSpec.RecomputeLogProbs);
        Assert.Empty(ppo.Validate());
        Assert.Equal(ppoSpec.ToJson(), RunSpec.FromJson(ppoSpec.ToJson()).ToJson());

        var dpo = new RunForm(RunPresets.For(RunPresets.QuickStart, TrainingMethod.Dpo)) { RpoAlpha = 0.5 };
        Assert.Equal(0.5, Assert.IsType<DpoSpec>(dpo.Spec).RpoAlpha);
        Assert.Empty(dpo.Validate());
        dpo.RpoAlpha = -1;
        Assert.Contains(dpo.Validate(), e => e.Field == "rpoAlpha");
        dpo.RpoAlpha = null;   // empty field = plain DPO
        Assert.Null(((DpoSpec)dpo.Spec).RpoAlpha);
        Assert.Empty(dpo.Validate());
    }

    [Fact]
    public void Switching_method_keeps_shared_settings_and_takes_the_new_methods_defaults()
    {
        var form = new RunForm(new SftSpec()) { Name = "x", MaxLength = 96, Model = ModelRef.FromPreset("small"), LearningRate = 1e-3 };
        form.Method = TrainingMethod.Ppo;
        var ppo = Assert.IsType<PpoSpec>(form.Spec);
        Assert.Equal("x", ppo.Name);
        Assert.Equal(96, ppo.MaxLength);
        Assert.Equal("small", ppo.Model.Preset);
        Assert.Equal(new PpoSpec().Training.LearningRate, ppo.Training.LearningRate);
        // fields of other methods read defaults and ignore writes
        form.Beta = 0.5;
        Assert.IsType<PpoSpec>(form.Spec);
        form.KlCoef = 0.3;
        Assert.Equal(0.3, ((PpoSpec)form.Spec).KlCoef);
    }

    [Fact]
    public void Validation_names_the_fields_the_form_marks()
    {
        var form = new RunForm(new SftSpec()) { BatchSize = 0, LearningRate = 0, MaxLength = 4 };
        var errors = form.Validate();
        Assert.Single(RunForm.For(errors, "training.batchSize"));
        Assert.Single(RunForm.For(errors, "training.learningRate"));
        Assert.Single(RunForm.For(errors, "maxLength"));
        Assert.Empty(RunForm.For(errors, "training.maxSteps"));
        form.Model = ModelRef.FromPath("");
        Assert.Contains(RunForm.For(form.Validate(), "model"), e => e.Field == "model.path");
    }

    [Fact]
    public void The_json_editor_reports_syntax_unknown_fields_and_bad_values_by_path()
    {
        var (ok, none) = RunForm.Parse(new DpoSpec().ToJson());
        Assert.IsType<DpoSpec>(ok);
        Assert.Empty(none);

        var (_, syntax) = RunForm.Parse("{\"method\": \"sft\", ");
        Assert.NotEmpty(syntax);
        var (_, unknown) = RunForm.Parse("{\"method\": \"sft\", \"learningRate\": 1}");
        Assert.Contains(unknown, e => e.Field.Contains("learningRate"));
        var (_, invalid) = RunForm.Parse("{\"method\": \"ppo\", \"klCoef\": -1, \"training\": {\"batchSize\": 8}, \"numMiniBatches\": 3}");
        Assert.Contains(invalid, e => e.Field == "klCoef");
        Assert.Contains(invalid, e => e.Field == "numMiniBatches");
    }

    [Fact]
    public void Quick_start_presets_are_valid_for_every_method_and_stackllama_asks_for_a_model_and_data()
    {
        foreach (var method in Enum.GetValues<TrainingMethod>())
        {
            Assert.Empty(RunPresets.For(RunPresets.QuickStart, method).Validate());
            var stack = RunPresets.For(RunPresets.StackLlama, method);
            Assert.Equal([ "model.path", "dataset.path" ], stack.Validate().Select(e => e.Field).ToList());
            var filled = stack with { Model = ModelRef.FromPath("/models/llama"), Dataset = new DatasetRef { Path = "/data/se" } };
            Assert.Empty(filled.Validate());
        }
        var sft = RunPresets.For(RunPresets.StackLlama, TrainingMethod.Sft);
        Assert.Equal((AdapterKind.Lora, 16, 32.0, 0.05), (sft.Adapter.Kind, sft.Adapter.Rank, sft.Adapter.Alpha, sft.Adapter.Dropout));
        Assert.Equal(["q_proj", "v_proj"], sft.Adapter.TargetModules);
        Assert.Equal(1.41e-5, RunPresets.For(RunPresets.StackLlama, TrainingMethod.Ppo).Training.LearningRate);
    }

    [Fact]
    public void The_pipeline_chains_stages_by_reference()
    {
        var stages = RunPresets.Pipeline(RunPresets.QuickStart, "demo");
        Assert.Equal([TrainingMethod.Sft, TrainingMethod.Reward, TrainingMethod.Ppo], stages.Select(s => s.Method));
        Assert.Equal(0, stages[1].Model.Stage);
        var ppo = Assert.IsType<PpoSpec>(stages[2]);
        Assert.Equal(0, ppo.Model.Stage);
        Assert.Equal(1, ppo.Reward.Stage);
        Assert.All(stages, s => Assert.Empty(s.Validate()));
        Assert.StartsWith("demo", stages[0].Name);
    }

    [Fact]
    public void Cloning_keeps_every_setting_and_marks_the_name()
    {
        var spec = RunPresets.For(RunPresets.QuickStart, TrainingMethod.Dpo) with { Name = "dpo a" };
        var clone = RunForm.CloneOf(spec);
        Assert.Equal("dpo a (copy)", clone.Name);
        Assert.Equal(spec with { Name = "" }, clone with { Name = "" });
    }

    [Fact]
    public void Step_time_follows_six_n_d_and_the_stated_efficiency()
    {
        var spec = new SftSpec { MaxLength = 100, Training = new TrainingSettings { BatchSize = 4, GradientAccumulation = 2 } };
        var e = StepTimeEstimate.Compute(spec, 1_000_000, peakGflops: 100);
        Assert.Equal(6.0 * 1e6 * 4 * 2 * 100, e.TrainFlops);
        Assert.Equal(e.TrainFlops / (100e9 * StepTimeEstimate.TrainEfficiency), e.Seconds, 12);
        Assert.Equal(10 * e.Seconds, e.TotalSeconds(10)!.Value, 12);
        Assert.Null(e.TotalSeconds(0));

        var lora = StepTimeEstimate.Compute(spec with { Adapter = new AdapterSettings { Kind = AdapterKind.Lora } }, 1_000_000, 100);
        Assert.Equal(4.0 / 6.0 * e.TrainFlops, lora.TrainFlops, 6);

        var ppo = new PpoSpec { MaxLength = 100, Sampling = new SamplingSettings { MaxNewTokens = 20, Temperature = 0.7 }, Training = new TrainingSettings { BatchSize = 4, MaxSteps = 10 } };
        var rl = StepTimeEstimate.Compute(ppo, 1_000_000, 100);
        Assert.Equal(2.0 * 1e6 * 4 * 20, rl.GenerationFlops);
        Assert.True(rl.Seconds > rl.GenerationFlops / (100e9 * StepTimeEstimate.GenerationEfficiency));
    }
}
