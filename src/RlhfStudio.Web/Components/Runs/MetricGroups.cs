namespace RlhfStudio.Web.Components.Runs;

/// <summary>Orders a run's metric names for display: the curves users look at first come first
/// (loss, accuracy, rewards, KL), then the rest alphabetically.</summary>
public static class MetricGroups
{
    private static readonly string[] Order =
    [
        "train/loss", "eval/loss", "eval/accuracy", "train/mean_token_accuracy", "eval/mean_token_accuracy",
        "objective/scores", "objective/rlhf_reward", "objective/kl", "objective/entropy", "objective/non_score_reward",
        "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "nll_loss",
        "policy/approxkl_avg", "policy/clipfrac_avg", "policy/entropy_avg", "loss/policy_avg", "loss/value_avg",
        "val/clipfrac_avg", "val/ratio", "val/num_eos_tokens", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
    ];

    public static IEnumerable<string> Sort(IEnumerable<string> names) =>
        names.OrderBy(n => Array.IndexOf(Order, n) is var i && i >= 0 ? i : Order.Length).ThenBy(n => n, StringComparer.Ordinal);

    /// <summary>The section a metric belongs to: its prefix as TRL logs it ("train", "eval", "objective", "policy",
    /// "rewards", "logps", "loss", "val"), or "other" for names without one.</summary>
    public static string GroupOf(string name)
    {
        int slash = name.IndexOf('/');
        return slash > 0 ? name[..slash] : "other";
    }

    /// <summary>The groups present, in the order their first metric sorts.</summary>
    public static IReadOnlyList<string> Groups(IEnumerable<string> names) => Sort(names).Select(GroupOf).Distinct().ToList();

    /// <summary>Distinct colours for series; run i of a comparison gets colour i.</summary>
    public static readonly string[] Palette = ["#3949ab", "#e53935", "#00897b", "#fb8c00", "#8e24aa", "#6d4c41", "#1e88e5", "#c0ca33", "#d81b60", "#546e7a"];
}
