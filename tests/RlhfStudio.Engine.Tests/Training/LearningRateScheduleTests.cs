using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Training;

namespace RlhfStudio.Engine.Tests.Training;

public class LearningRateScheduleTests
{
    // Hand-computed from transformers' lr_lambda functions: total 10 steps, 2 warmup, peak 1e-3.
    [Theory]
    [InlineData(0, 0.0)]
    [InlineData(1, 0.5e-3)]
    [InlineData(2, 1e-3)]
    [InlineData(4, 0.85355339059327373e-3)]   // progress 1/4: 0.5 * (1 + cos(pi/4))
    [InlineData(6, 0.5e-3)]                   // progress 1/2: 0.5 * (1 + cos(pi/2))
    [InlineData(9, 0.03806023374435663e-3)]   // progress 7/8: 0.5 * (1 + cos(7pi/8))
    [InlineData(10, 0.0)]
    public void Cosine_with_warmup_matches_transformers(long step, double expected) =>
        Assert.Equal(expected, new LearningRateSchedule(LrSchedule.Cosine, 1e-3, 10, 2).At(step), 15);

    [Theory]
    [InlineData(0, 0.0)]
    [InlineData(1, 0.5e-3)]
    [InlineData(2, 1e-3)]
    [InlineData(6, 0.5e-3)]     // (10 - 6) / 8
    [InlineData(9, 0.125e-3)]   // (10 - 9) / 8
    [InlineData(10, 0.0)]
    public void Linear_with_warmup_matches_transformers(long step, double expected) =>
        Assert.Equal(expected, new LearningRateSchedule(LrSchedule.Linear, 1e-3, 10, 2).At(step), 15);

    [Theory]
    [InlineData(2, 0, 0.0)]
    [InlineData(2, 1, 2e-4)]
    [InlineData(2, 2, 4e-4)]
    [InlineData(0, 0, 4e-4)]
    [InlineData(0, 9, 4e-4)]
    public void Constant_warms_up_then_holds(long warmup, long step, double expected) =>
        Assert.Equal(expected, new LearningRateSchedule(LrSchedule.Constant, 4e-4, 10, warmup).At(step), 15);

    [Theory]
    [InlineData(0.03, 100, 3)]
    [InlineData(0.07, 100, 8)]   // 100 * 0.07 is 7.000000000000001 in binary floating point: math.ceil gives 8, as in transformers
    [InlineData(0.1, 10, 1)]
    [InlineData(0.0, 10, 0)]
    [InlineData(0.05, 7, 1)]
    public void Warmup_steps_round_up_like_transformers(double ratio, long total, long expected) =>
        Assert.Equal(expected, LearningRateSchedule.WarmupStepsFor(ratio, total));

    [Fact]
    public void No_warmup_starts_at_the_peak() =>
        Assert.Equal(1e-3, new LearningRateSchedule(LrSchedule.Cosine, 1e-3, 10, 0).At(0), 15);

    [Fact]
    public void Invalid_shapes_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LearningRateSchedule(LrSchedule.Cosine, 1e-3, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LearningRateSchedule(LrSchedule.Cosine, 1e-3, 5, 6));
    }
}
