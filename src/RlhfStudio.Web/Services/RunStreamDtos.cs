namespace RlhfStudio.Web.Services;

// What the hub sends to clients watching a run, and what pages render. Keys for de-duplication:
// metrics (Name, Step); samples (Table, Step, Index); checkpoints (Step); events (Id).

public sealed record MetricPointDto(string Name, long Step, double Value, long TimeMs);

public sealed record SampleDto(long Step, string Table, int Index, string Prompt, string Completion, double? Score,
    string? Reference, double? ReferenceScore, string? ExtraJson, long TimeMs);

public sealed record CheckpointDto(long Step, string Path, IReadOnlyDictionary<string, double> Metrics, long TimeMs);

public sealed record ProgressDto(long Step, long TotalSteps, double ElapsedSeconds, double? EtaSeconds, string Phase);

public sealed record RunEventDto(long Id, long TimeMs, long? Step, string Level, string? Code, string Message);

/// <summary>What a client gets when it starts watching a run: everything recorded so far. Live messages
/// that follow may repeat some of it; clients de-duplicate by the keys above.</summary>
public sealed record RunHistory(
    long RunId,
    string Status,
    ProgressDto? Progress,
    IReadOnlyDictionary<string, IReadOnlyList<MetricPointDto>> Metrics,
    IReadOnlyList<SampleDto> Samples,
    IReadOnlyList<CheckpointDto> Checkpoints,
    IReadOnlyList<RunEventDto> Events);
