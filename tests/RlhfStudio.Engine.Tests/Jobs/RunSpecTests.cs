using RlhfStudio.Engine.Jobs;

namespace RlhfStudio.Engine.Tests.Jobs;

public class RunSpecTests
{
    [Theory]
    [InlineData(typeof(SftSpec))]
    [InlineData(typeof(RewardSpec))]
    [InlineData(typeof(PpoSpec))]
    [InlineData(typeof(RlooSpec))]
    [InlineData(typeof(DpoSpec))]
    public void Default_spec_of_every_method_is_valid_and_round_trips_through_json(Type type)
    {
        var spec = (RunSpec)Activator.CreateInstance(type)!;
        Assert.Empty(spec.Validate());
        var json = spec.ToJson();
        var back = RunSpec.FromJson(json);
        Assert.IsType(type, back);
        Assert.Equal(json, back.ToJson());
    }

    [Fact]
    public void Json_carries_the_method_discriminator_first()
    {
        var json = new PpoSpec().ToJson();
        Assert.StartsWith("{\n  \"method\": \"ppo\"", json.Replace("\r\n", "\n"));
    }

    [Fact]
    public void Each_bad_field_is_named_by_its_json_path()
    {
        var spec = new SftSpec
        {
            Training = new TrainingSettings { LearningRate = -1, BatchSize = 0 },
            Adapter = new AdapterSettings { Kind = AdapterKind.Lora, Rank = 0 },
            Sampling = new SamplingSettings { TopP = 0 },
            Device = "tpu",
        };
        var fields = spec.Validate().Select(e => e.Field).ToList();
        Assert.Contains("training.learningRate", fields);
        Assert.Contains("training.batchSize", fields);
        Assert.Contains("adapter.rank", fields);
        Assert.Contains("sampling.topP", fields);
        Assert.Contains("device", fields);
        Assert.Equal(5, fields.Count);
    }

    [Fact]
    public void Nan_learning_rate_is_refused()
    {
        var spec = new SftSpec { Training = new TrainingSettings { LearningRate = double.NaN } };
        Assert.Contains(spec.Validate(), e => e.Field == "training.learningRate");
    }

    [Fact]
    public void Model_needs_exactly_one_source()
    {
        var spec = new SftSpec { Model = new ModelRef { Path = "/models/x", Preset = "tiny" } };
        var error = Assert.Single(spec.Validate());
        Assert.Equal("model", error.Field);
        Assert.Contains("exactly one", error.Message);
    }

    [Fact]
    public void Ppo_checks_mini_batches_against_batch_size()
    {
        var spec = new PpoSpec { NumMiniBatches = 3, Training = new TrainingSettings { BatchSize = 8, MaxSteps = 10 } };
        var error = Assert.Single(spec.Validate());
        Assert.Equal("numMiniBatches", error.Field);
        Assert.Contains("divide", error.Message);
    }

    [Fact]
    public void Dpo_prompt_length_must_fit_max_length()
    {
        var spec = new DpoSpec { MaxLength = 64, MaxPromptLength = 64 };
        Assert.Equal("maxPromptLength", Assert.Single(spec.Validate()).Field);
    }

    [Fact]
    public void EnsureValid_throws_with_every_error_in_the_message()
    {
        var spec = new RewardSpec { Seed = 1, MaxLength = 2, Template = "alpaca" };
        var ex = Assert.Throws<RunSpecException>(spec.EnsureValid);
        Assert.Contains("maxLength", ex.Message);
        Assert.Contains("template: unknown template \"alpaca\"", ex.Message);
        Assert.Equal(2, ex.Errors.Count);
    }

    [Fact]
    public void Unknown_field_in_json_is_named()
    {
        var ex = Assert.Throws<RunSpecException>(() => RunSpec.FromJson("""{"method":"sft","training":{"learningrate2":0.1}}"""));
        var error = Assert.Single(ex.Errors);
        Assert.Contains("learningrate2", error.Message);
    }

    [Fact]
    public void Wrong_type_in_json_names_the_path()
    {
        var ex = Assert.Throws<RunSpecException>(() => RunSpec.FromJson("""{"method":"sft","training":{"batchSize":"eight"}}"""));
        Assert.Equal("training.batchSize", Assert.Single(ex.Errors).Field);
    }

    [Fact]
    public void Unknown_method_is_refused_clearly()
    {
        var ex = Assert.Throws<RunSpecException>(() => RunSpec.FromJson("""{"method":"grpo"}"""));
        Assert.Contains("method", ex.Errors[0].Message);
    }

    [Fact]
    public void Malformed_json_is_refused_with_a_message()
    {
        var ex = Assert.Throws<RunSpecException>(() => RunSpec.FromJson("""{"method":"sft", """));
        Assert.NotEmpty(ex.Errors);
    }

    [Fact]
    public void Values_in_json_override_defaults_and_are_validated()
    {
        var spec = RunSpec.FromJson("""
            {"method":"dpo","beta":0.5,"model":{"path":"/m"},"dataset":{"path":"/d.jsonl","columnMap":{"chosen":"response_j"}}}
            """);
        var dpo = Assert.IsType<DpoSpec>(spec);
        Assert.Equal(0.5, dpo.Beta);
        Assert.Equal("/m", dpo.Model.Path);
        Assert.Equal("response_j", dpo.Dataset.ColumnMap!["chosen"]);
        Assert.Equal(5e-6, dpo.Training.LearningRate);

        var bad = Assert.Throws<RunSpecException>(() => RunSpec.FromJson("""{"method":"dpo","beta":0}"""));
        Assert.Equal("beta", Assert.Single(bad.Errors).Field);
    }

    [Fact]
    public void Creating_a_job_for_an_invalid_spec_throws_before_anything_runs()
    {
        Assert.Throws<RunSpecException>(() => TrainingJobs.Create(new SftSpec { Seed = 0, MaxLength = 1 }));
    }
}
