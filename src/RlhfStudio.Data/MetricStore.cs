using Microsoft.Data.Sqlite;

namespace RlhfStudio.Data;

/// <summary>One metric value to store.</summary>
public readonly record struct MetricInput(long RunId, string Name, long Step, double Value, long TimeMs);

/// <summary>A point read back.</summary>
public readonly record struct MetricValue(long Step, double Value, long TimeMs);

/// <summary>Writes metric points in batches (one transaction, prepared statements) and reads series back.
/// Metric points arrive by the thousand; going through EF change tracking for each would cost ~50x more.
/// A point re-reported for the same (run, name, step), as after a resume, replaces the stored one.</summary>
public sealed class MetricStore(string connectionString)
{
    private readonly Dictionary<(long RunId, string Name), long> _seriesIds = new();

    /// <summary>Writes a batch in one transaction and returns how many points were stored. Non-finite values
    /// are skipped (a chart cannot draw them); trainers report a NaN loss as an event instead.</summary>
    public async Task<int> WriteAsync(IReadOnlyCollection<MetricInput> batch, CancellationToken cancel = default)
    {
        if (batch.Count == 0) return 0;
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancel);
        await using var tx = (SqliteTransaction)await connection.BeginTransactionAsync(cancel);

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
        foreach (var m in batch)
        {
            if (!double.IsFinite(m.Value)) continue;
            if (!_seriesIds.TryGetValue((m.RunId, m.Name), out var seriesId))
            {
                sRun.Value = m.RunId;
                sName.Value = m.Name;
                seriesId = (long)(await insertSeries.ExecuteScalarAsync(cancel))!;
                _seriesIds[(m.RunId, m.Name)] = seriesId;
            }
            pSeries.Value = seriesId;
            pStep.Value = m.Step;
            pValue.Value = m.Value;
            pTime.Value = m.TimeMs;
            await insertPoint.ExecuteNonQueryAsync(cancel);
            written++;
        }
        await tx.CommitAsync(cancel);
        return written;
    }

    /// <summary>Forgets cached series ids of a run (after it was deleted).</summary>
    public void Forget(long runId)
    {
        foreach (var key in _seriesIds.Keys.Where(k => k.RunId == runId).ToList()) _seriesIds.Remove(key);
    }

    /// <summary>Names of a run's metric series.</summary>
    public async Task<IReadOnlyList<string>> SeriesNamesAsync(long runId, CancellationToken cancel = default)
    {
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancel);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT Name FROM metric_series WHERE RunId = $run ORDER BY Name";
        cmd.Parameters.AddWithValue("$run", runId);
        var names = new List<string>();
        await using var reader = await cmd.ExecuteReaderAsync(cancel);
        while (await reader.ReadAsync(cancel)) names.Add(reader.GetString(0));
        return names;
    }

    /// <summary>All points of one series with from &lt;= step &lt;= to, in step order.</summary>
    public async Task<IReadOnlyList<MetricValue>> ReadAsync(long runId, string name, long from = long.MinValue, long to = long.MaxValue,
        CancellationToken cancel = default)
    {
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancel);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT p.Step, p.Value, p.TimeMs FROM metric_points p JOIN metric_series s ON s.Id = p.SeriesId " +
                          "WHERE s.RunId = $run AND s.Name = $name AND p.Step BETWEEN $from AND $to ORDER BY p.Step";
        cmd.Parameters.AddWithValue("$run", runId);
        cmd.Parameters.AddWithValue("$name", name);
        cmd.Parameters.AddWithValue("$from", from);
        cmd.Parameters.AddWithValue("$to", to);
        var points = new List<MetricValue>();
        await using var reader = await cmd.ExecuteReaderAsync(cancel);
        while (await reader.ReadAsync(cancel)) points.Add(new MetricValue(reader.GetInt64(0), reader.GetDouble(1), reader.GetInt64(2)));
        return points;
    }
}
