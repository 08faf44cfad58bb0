using Microsoft.Data.Sqlite;

namespace RlhfStudio.Data;

/// <summary>A sample row to store (mirrors the engine's SampleRow without depending on the engine).</summary>
public sealed record SampleInput(long RunId, long Step, string Table, int Index, string Prompt, string Completion,
    double? Score, string? Reference, double? ReferenceScore, string? ExtraJson, long TimeMs);

public sealed record CheckpointInput(long RunId, long Step, string Path, string MetricsJson, long TimeMs);

public sealed record EventInput(long RunId, long TimeMs, long? Step, string Level, string? Code, string Message);

public sealed record ProgressInput(long RunId, long Step, long TotalSteps, double? EtaSeconds);

/// <summary>Everything a batch of reports from running jobs adds to the records.</summary>
public sealed class RecordBatch
{
    public List<MetricInput> Metrics { get; } = [];
    public List<SampleInput> Samples { get; } = [];
    public List<CheckpointInput> Checkpoints { get; } = [];
    public List<EventInput> Events { get; } = [];
    /// <summary>Latest progress per run (older entries in the same batch are superseded).</summary>
    public Dictionary<long, ProgressInput> Progress { get; } = [];

    public int Count => Metrics.Count + Samples.Count + Checkpoints.Count + Events.Count + Progress.Count;
}

/// <summary>Writes batches of run records in one transaction with prepared statements. Re-reported
/// rows (same run/metric/step, same run/table/step/index, same run/checkpoint step) replace the stored
/// ones, so a run resumed from a checkpoint never duplicates what it recorded before a crash.</summary>
public sealed class RunJournal(string connectionString)
{
    private readonly Dictionary<(long RunId, string Name), long> _seriesIds = new();
    private readonly Lock _cacheLock = new();

    public string ConnectionString => connectionString;

    /// <summary>Writes the batch and returns the ids of the events it inserted (in order).</summary>
    public async Task<IReadOnlyList<long>> WriteAsync(RecordBatch batch, CancellationToken cancel = default)
    {
        if (batch.Count == 0) return [];
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancel);
        await using var tx = (SqliteTransaction)await connection.BeginTransactionAsync(cancel);
        if (batch.Metrics.Count > 0) await WriteMetricsAsync(connection, tx, batch.Metrics, cancel);
        if (batch.Samples.Count > 0) await WriteSamplesAsync(connection, tx, batch.Samples, cancel);
        if (batch.Checkpoints.Count > 0) await WriteCheckpointsAsync(connection, tx, batch.Checkpoints, cancel);
        var eventIds = batch.Events.Count > 0 ? await WriteEventsAsync(connection, tx, batch.Events, cancel) : [];
        if (batch.Progress.Count > 0) await WriteProgressAsync(connection, tx, batch.Progress.Values, cancel);
        await tx.CommitAsync(cancel);
        return eventIds;
    }

    /// <summary>Forgets cached series ids of a run (after it was deleted).</summary>
    public void Forget(long runId)
    {
        lock (_cacheLock)
            foreach (var key in _seriesIds.Keys.Where(k => k.RunId == runId).ToList()) _seriesIds.Remove(key);
    }

    internal async Task<int> WriteMetricsAsync(SqliteConnection connection, SqliteTransaction tx, IEnumerable<MetricInput> metrics, CancellationToken cancel)
    {
        await using var insertSeries = connection.CreateCommand();
        insertSeries.Transaction = tx;
        insertSeries.CommandText = "INSERT INTO metric_series (RunId, Name) VALUES ($run, $name) ON CONFLICT(RunId, Name) DO NOTHING; " +
                                   "SELECT Id FROM metric_series WHERE RunId = $run AND Name = $name;";
        var sRun = insertSeries.Parameters.Add("$run", SqliteType.Integer);
        var sName = insertSeries.Parameters.Add("$name", SqliteType.Text);

        await using var insertPoint = connection.CreateCommand();
        insertPoint.Transaction = tx;
        insertPoint.CommandText = "INSERT INTO metric_points (SeriesId, Step, Value, TimeMs) VALUES ($s, $step, $v, $t) " +
                                  "ON CONFLICT(SeriesId, Step) DO UPDATE SET Value = excluded.Value, TimeMs = excluded.TimeMs;";
        var pSeries = insertPoint.Parameters.Add("$s", SqliteType.Integer);
        var pStep = insertPoint.Parameters.Add("$step", SqliteType.Integer);
        var pValue = insertPoint.Parameters.Add("$v", SqliteType.Real);
        var pTime = insertPoint.Parameters.Add("$t", SqliteType.Integer);
        insertPoint.Prepare();

        int written = 0;
        foreach (var m in metrics)
        {
            if (!double.IsFinite(m.Value)) continue;
            long seriesId;
            bool cached;
            lock (_cacheLock) cached = _seriesIds.TryGetValue((m.RunId, m.Name), out seriesId);
            if (!cached)
            {
                sRun.Value = m.RunId;
                sName.Value = m.Name;
                seriesId = (long)(await insertSeries.ExecuteScalarAsync(cancel))!;
                lock (_cacheLock) _seriesIds[(m.RunId, m.Name)] = seriesId;
            }
            pSeries.Value = seriesId;
            pStep.Value = m.Step;
            pValue.Value = m.Value;
            pTime.Value = m.TimeMs;
            await insertPoint.ExecuteNonQueryAsync(cancel);
            written++;
        }
        return written;
    }

    private static async Task WriteSamplesAsync(SqliteConnection connection, SqliteTransaction tx, List<SampleInput> samples, CancellationToken cancel)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = """
            INSERT INTO samples (RunId, Step, "Table", "Index", Prompt, Completion, Score, Reference, ReferenceScore, ExtraJson, CreatedAt)
            VALUES ($run, $step, $table, $index, $prompt, $completion, $score, $ref, $refScore, $extra, $t)
            ON CONFLICT(RunId, "Table", Step, "Index") DO UPDATE SET Prompt = excluded.Prompt, Completion = excluded.Completion,
              Score = excluded.Score, Reference = excluded.Reference, ReferenceScore = excluded.ReferenceScore,
              ExtraJson = excluded.ExtraJson, CreatedAt = excluded.CreatedAt;
            """;
        var run = cmd.Parameters.Add("$run", SqliteType.Integer);
        var step = cmd.Parameters.Add("$step", SqliteType.Integer);
        var table = cmd.Parameters.Add("$table", SqliteType.Text);
        var index = cmd.Parameters.Add("$index", SqliteType.Integer);
        var prompt = cmd.Parameters.Add("$prompt", SqliteType.Text);
        var completion = cmd.Parameters.Add("$completion", SqliteType.Text);
        var score = cmd.Parameters.Add("$score", SqliteType.Real);
        var reference = cmd.Parameters.Add("$ref", SqliteType.Text);
        var refScore = cmd.Parameters.Add("$refScore", SqliteType.Real);
        var extra = cmd.Parameters.Add("$extra", SqliteType.Text);
        var time = cmd.Parameters.Add("$t", SqliteType.Integer);
        cmd.Prepare();
        foreach (var s in samples)
        {
            run.Value = s.RunId;
            step.Value = s.Step;
            table.Value = s.Table;
            index.Value = s.Index;
            prompt.Value = s.Prompt;
            completion.Value = s.Completion;
            score.Value = Finite(s.Score);
            reference.Value = (object?)s.Reference ?? DBNull.Value;
            refScore.Value = Finite(s.ReferenceScore);
            extra.Value = (object?)s.ExtraJson ?? DBNull.Value;
            time.Value = s.TimeMs;
            await cmd.ExecuteNonQueryAsync(cancel);
        }
    }

    private static async Task WriteCheckpointsAsync(SqliteConnection connection, SqliteTransaction tx, List<CheckpointInput> checkpoints, CancellationToken cancel)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = """
            INSERT INTO checkpoints (RunId, Step, Path, MetricsJson, CreatedAt) VALUES ($run, $step, $path, $metrics, $t)
            ON CONFLICT(RunId, Step) DO UPDATE SET Path = excluded.Path, MetricsJson = excluded.MetricsJson, CreatedAt = excluded.CreatedAt;
            """;
        var run = cmd.Parameters.Add("$run", SqliteType.Integer);
        var step = cmd.Parameters.Add("$step", SqliteType.Integer);
        var path = cmd.Parameters.Add("$path", SqliteType.Text);
        var metrics = cmd.Parameters.Add("$metrics", SqliteType.Text);
        var time = cmd.Parameters.Add("$t", SqliteType.Integer);
        foreach (var c in checkpoints)
        {
            run.Value = c.RunId;
            step.Value = c.Step;
            path.Value = c.Path;
            metrics.Value = c.MetricsJson;
            time.Value = c.TimeMs;
            await cmd.ExecuteNonQueryAsync(cancel);
        }
    }

    private static async Task<List<long>> WriteEventsAsync(SqliteConnection connection, SqliteTransaction tx, List<EventInput> events, CancellationToken cancel)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "INSERT INTO run_events (RunId, Time, Step, Level, Code, Message) VALUES ($run, $t, $step, $level, $code, $message) RETURNING Id;";
        var run = cmd.Parameters.Add("$run", SqliteType.Integer);
        var time = cmd.Parameters.Add("$t", SqliteType.Integer);
        var step = cmd.Parameters.Add("$step", SqliteType.Integer);
        var level = cmd.Parameters.Add("$level", SqliteType.Text);
        var code = cmd.Parameters.Add("$code", SqliteType.Text);
        var message = cmd.Parameters.Add("$message", SqliteType.Text);
        var ids = new List<long>(events.Count);
        foreach (var e in events)
        {
            run.Value = e.RunId;
            time.Value = e.TimeMs;
            step.Value = (object?)e.Step ?? DBNull.Value;
            level.Value = e.Level;
            code.Value = (object?)e.Code ?? DBNull.Value;
            message.Value = e.Message;
            ids.Add((long)(await cmd.ExecuteScalarAsync(cancel))!);
        }
        return ids;
    }

    private static async Task WriteProgressAsync(SqliteConnection connection, SqliteTransaction tx, IEnumerable<ProgressInput> progress, CancellationToken cancel)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "UPDATE runs SET Step = $step, TotalSteps = $total, EtaSeconds = $eta WHERE Id = $run;";
        var run = cmd.Parameters.Add("$run", SqliteType.Integer);
        var step = cmd.Parameters.Add("$step", SqliteType.Integer);
        var total = cmd.Parameters.Add("$total", SqliteType.Integer);
        var eta = cmd.Parameters.Add("$eta", SqliteType.Real);
        foreach (var p in progress)
        {
            run.Value = p.RunId;
            step.Value = p.Step;
            total.Value = p.TotalSteps;
            eta.Value = Finite(p.EtaSeconds);
            await cmd.ExecuteNonQueryAsync(cancel);
        }
    }

    private static object Finite(double? v) => v is double d && double.IsFinite(d) ? d : DBNull.Value;
}
