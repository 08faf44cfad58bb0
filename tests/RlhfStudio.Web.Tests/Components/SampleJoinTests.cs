using RlhfStudio.Web.Components.Comparison;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Tests.Components;

public class SampleJoinTests
{
    private static SampleDto S(long step, string prompt, string completion, double? score = null, string table = "eval") =>
        new(step, table, 0, prompt, completion, score, null, null, null, 0);

    [Fact]
    public void Joins_by_prompt_at_the_last_step_all_runs_sampled()
    {
        IReadOnlyList<SampleDto> a = [S(10, "p1", "a10"), S(20, "p1", "a20", 1), S(20, "p2", "a20b"), S(30, "p1", "a30")];
        IReadOnlyList<SampleDto> b = [S(10, "p1", "b10"), S(20, "p1", "b20", 0.5), S(20, "p3", "b20c")];
        var join = SampleJoin.Join([a, b]);
        Assert.True(join.CommonStep);
        Assert.Equal([20L, 20L], join.Steps);
        var row = Assert.Single(join.Prompts); // p2 and p3 were answered by one run only
        Assert.Equal("p1", row.Prompt);
        Assert.Equal(["a20", "b20"], row.Cells.Select(c => c!.Completion));
    }

    [Fact]
    public void Without_a_shared_step_each_run_uses_its_last_one()
    {
        IReadOnlyList<SampleDto> a = [S(5, "p", "a5"), S(15, "p", "a15")];
        IReadOnlyList<SampleDto> b = [S(10, "p", "b10")];
        IReadOnlyList<SampleDto> c = [];
        var join = SampleJoin.Join([a, b, c]);
        Assert.False(join.CommonStep);
        Assert.Equal([15L, 10L, null], join.Steps);
        var row = Assert.Single(join.Prompts);
        Assert.Null(row.Cells[2]);
        Assert.Equal("a15", row.Cells[0]!.Completion);
    }
}
