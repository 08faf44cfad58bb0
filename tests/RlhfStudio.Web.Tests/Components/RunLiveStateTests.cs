using RlhfStudio.Web.Components.Runs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Tests.Components;

public class RunLiveStateTests
{
    private static MetricPointDto P(string name, long step, double value) => new(name, step, value, 1000 + step);

    [Fact]
    public void Live_points_that_overlap_the_history_replace_their_twin_instead_of_duplicating()
    {
        var state = new RunLiveState(7);
        state.Load(new RunHistory(7, "Running", null,
            new Dictionary<string, IReadOnlyList<MetricPointDto>> { ["train/loss"] = [P("train/loss", 1, 2.0), P("train/loss", 2, 1.8)] },
            [new SampleDto(10, "eval", 0, "q", "a", 0.5, null, null, null, 0)], [], [new RunEventDto(1, 0, null, "Info", null, "started")]));

        Assert.True(state.Apply(new RunMetricsAppended(7, [P("train/loss", 2, 1.7), P("train/loss", 3, 1.5)])));
        Assert.True(state.Apply(new RunSamplesAppended(7, [new SampleDto(10, "eval", 0, "q", "a2", 0.9, null, null, null, 1)])));
        Assert.True(state.Apply(new RunEventsAppended(7, [new RunEventDto(1, 0, null, "Info", null, "started"), new RunEventDto(2, 1, 3, "Warning", "kl-negative", "KL < 0")])));

        Assert.Equal([1L, 2L, 3L], state.Series("train/loss").Select(p => p.Step));
        Assert.Equal(1.7, state.Series("train/loss")[1].Value);
        Assert.Equal("a2", Assert.Single(state.Samples).Completion);
        Assert.Equal(2, state.Events.Count);
        Assert.Equal("kl-negative", Assert.Single(state.Warnings).Code);
        Assert.Equal(3, state.PointCount);
    }

    [Fact]
    public void Events_of_other_runs_are_ignored()
    {
        var state = new RunLiveState(7);
        Assert.False(state.Apply(new RunMetricsAppended(8, [P("train/loss", 1, 1)])));
        Assert.False(state.Apply(new RunListChanged(8, "Completed")));
        Assert.True(state.Apply(new RunListChanged(7, "Completed")));
        Assert.Equal("Completed", state.Status);
        Assert.True(state.Apply(new RunProgressChanged(7, new ProgressDto(5, 10, 1, 1, "train"))));
        Assert.Equal(5, state.Progress!.Step);
        Assert.Empty(state.MetricNames);
    }
}
