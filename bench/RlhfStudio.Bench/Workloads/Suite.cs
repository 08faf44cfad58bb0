namespace RlhfStudio.Bench.Workloads;

/// <summary>One workload of the suite, run in a process of its own (so its peak memory is its own) by us and by
/// bench/pytorch/bench.py under the same id.</summary>
public sealed record WorkloadSpec(string Kind, string Config, string DType)
{
    public string Id => Kind == "matmul" ? $"matmul-{DType}" : $"{Kind}-{Config}-{DType}";

    /// <summary>Rows that "best mode" comparisons pick from: the same kind and config, any dtype.</summary>
    public string Family => Kind == "matmul" ? "matmul" : $"{Kind}-{Config}";
}

public static class Suite
{
    private static readonly string[] DTypeNames = ["fp32", "bf16"];

    /// <summary>Every workload in run order. The matmul peak comes first and last: utilisation uses the best of both,
    /// so a burst of load during one of them does not inflate the figures.</summary>
    public static IReadOnlyList<WorkloadSpec> All { get; } =
    [
        .. DTypeNames.Select(d => new WorkloadSpec("matmul", "", d)),
        .. BenchConfig.All.SelectMany(c => DTypeNames.Select(d => new WorkloadSpec("train", c.Name, d))),
        .. BenchConfig.All.SelectMany(c => DTypeNames.Select(d => new WorkloadSpec("generate", c.Name, d))),
        .. DTypeNames.Select(d => new WorkloadSpec("reward", "tiny", d)),
        .. DTypeNames.Select(d => new WorkloadSpec("dpo", "tiny", d)),
        new WorkloadSpec("ppo", "tiny", "bf16"),
    ];

    public static WorkloadSpec Find(string id) =>
        All.FirstOrDefault(w => w.Id == id) ?? throw new ArgumentException($"unknown workload \"{id}\"; workloads: {string.Join(", ", All.Select(w => w.Id))}");

    /// <summary>Runs one workload in this process.</summary>
    public static Measurement Run(WorkloadSpec spec, bool quick)
    {
        int reps = quick ? 3 : 6;
        var dtype = DTypes.Parse(spec.DType);
        return spec.Kind switch
        {
            "matmul" => MatmulPeak.Run(spec.Id, dtype, reps),
            "train" => TrainingStep.Run(spec.Id, BenchConfig.Find(spec.Config), dtype, reps),
            "generate" => Generate.Run(spec.Id, BenchConfig.Find(spec.Config), dtype, reps),
            "reward" => RewardStep.Run(spec.Id, BenchConfig.Find(spec.Config), dtype, reps),
            "dpo" => DpoStep.Run(spec.Id, BenchConfig.Find(spec.Config), dtype, reps),
            "ppo" => PpoStep.Run(spec.Id, dtype, quick ? 2 : 3),
            _ => throw new ArgumentException($"unknown workload kind \"{spec.Kind}\""),
        };
    }
}
