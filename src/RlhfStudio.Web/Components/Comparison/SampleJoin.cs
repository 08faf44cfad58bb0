using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Components.Comparison;

/// <summary>The same prompt's generations from several runs, one cell per run (null where a run has no answer).</summary>
public sealed record JoinedPrompt(string Prompt, IReadOnlyList<SampleDto?> Cells);

/// <summary>Result of joining runs' samples: the step used per run and the joined prompts.</summary>
public sealed record SampleJoinResult(IReadOnlyList<long?> Steps, bool CommonStep, IReadOnlyList<JoinedPrompt> Prompts);

/// <summary>Joins the sample tables of several runs by prompt, at the last step they all sampled; when they share no
/// step (different eval cadences), at each run's own last step. Prompts answered by fewer than two runs are left out.</summary>
public static class SampleJoin
{
    public static SampleJoinResult Join(IReadOnlyList<IReadOnlyList<SampleDto>> runs, string table = "eval")
    {
        var perRun = runs.Select(r => r.Where(s => s.Table == table).ToList()).ToList();
        var stepSets = perRun.Select(r => r.Select(s => s.Step).ToHashSet()).ToList();
        var common = stepSets.Count == 0 ? [] : stepSets.Skip(1).Aggregate(new HashSet<long>(stepSets[0]), (acc, s) => { acc.IntersectWith(s); return acc; });
        bool isCommon = common.Count > 0;
        var steps = perRun.Select((r, i) => isCommon ? common.Max() : r.Count == 0 ? (long?)null : r.Max(s => s.Step)).ToList();
        var atStep = perRun.Select((r, i) => steps[i] is long st
            ? r.Where(s => s.Step == st).GroupBy(s => s.Prompt).ToDictionary(g => g.Key, g => g.OrderBy(s => s.Index).First())
            : []).ToList();
        var prompts = new List<JoinedPrompt>();
        foreach (var prompt in atStep.SelectMany(d => d.Keys).Distinct())
        {
            var cells = atStep.Select(d => d.TryGetValue(prompt, out var s) ? s : null).ToList();
            if (cells.Count(c => c is not null) >= 2) prompts.Add(new JoinedPrompt(prompt, cells));
        }
        return new SampleJoinResult(steps, isCommon, prompts);
    }
}
