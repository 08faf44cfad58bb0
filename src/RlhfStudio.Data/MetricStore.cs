using Microsoft.Data.Sqlite;

namespace RlhfStudio.Data;

/// <summary>One metric value to store.</summary>
public readonly record struct MetricInput(long RunId, string Name, long Step, double Value, long TimeMs);

/// <summary>A point read back.</summary>
public readonly record struct MetricValue(long Step, double Value, long TimeMs);

/// <summary>Reads metric series back (and writes plain metric batches through <see cref="RunJournal"/>).
/// A point re-reported for the same (run, name, step), as after a resume, replaces the stored one.</summary>
public sealed class MetricStore(string connectionString)
{
    private readonly RunJournal _journal = new(connectionString);

    /// <summary>Writes a batch in one transaction and returns how many points were stored. Non-finite values
    /// are skipped (a chart cannot draw them); trainers report a NaN loss as an event instead.</summary>
    public async Task<int> WriteAsync(IReadOnlyCollection<MetricInput> batch, CancellationToken cancel = default)
    {
        if (batch.Count == 0) return 0;
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancel);
        await using var tx = (SqliteTransaction)await connection.BeginTransactionAsync(cancel);
        int written = await _journal.WriteMetricsAsync(connection, tx, batch, cancel);
        await tx.CommitAsync(cancel);
        return written;
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

    /// <summary>A series with from &lt;= step &lt;= to reduced to at most about <paramref name="maxPoints"/> points
    /// that keep its extremes: the range is cut into maxPoints/2 buckets of steps and each bucket keeps its
    /// lowest and highest point (plus the first and last point of the range), so spikes and dips survive
    /// at any zoom. Series shorter than maxPoints come back whole.</summary>
    public async Task<IReadOnlyList<MetricValue>> ReadDownsampledAsync(long runId, string name, long from, long to, int maxPoints,
        CancellationToken cancel = default)
    {
        if (maxPoints < 4) throw new ArgumentOutOfRangeException(nameof(maxPoints), "maxPoints must be at least 4");
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancel);
        long? seriesId;
        await using (var find = connection.CreateCommand())
        {
            find.CommandText = "SELECT Id FROM metric_series WHERE RunId = $run AND Name = $name";
            find.Parameters.AddWithValue("$run", runId);
            find.Parameters.AddWithValue("$name", name);
            seriesId = (long?)await find.ExecuteScalarAsync(cancel);
        }
        if (seriesId is null) return [];

        long count, first, last;
        await using (var stats = connection.CreateCommand())
        {
            stats.CommandText = "SELECT COUNT(*), MIN(Step), MAX(Step) FROM metric_points WHERE SeriesId = $s AND Step BETWEEN $from AND $to";
            stats.Parameters.AddWithValue("$s", seriesId);
            stats.Parameters.AddWithValue("$from", from);
            stats.Parameters.AddWithValue("$to", to);
            await using var r = await stats.ExecuteReaderAsync(cancel);
            await r.ReadAsync(cancel);
            count = r.GetInt64(0);
            if (count == 0) return [];
            first = r.GetInt64(1);
            last = r.GetInt64(2);
        }
        if (count <= maxPoints) return await ReadAsync(runId, name, from, to, cancel);

        long buckets = Math.Max(1, (maxPoints - 2) / 2);
        double width = (last - first + 1) / (double)buckets;
        // SQLite returns the other columns of the row that holds MIN()/MAX() (bare columns in aggregates).
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = """
            SELECT Step, MIN(Value), TimeMs FROM metric_points WHERE SeriesId = $s AND Step BETWEEN $from AND $to GROUP BY CAST((Step - $first) / $w AS INTEGER)
            UNION ALL
            SELECT Step, MAX(Value), TimeMs FROM metric_points WHERE SeriesId = $s AND Step BETWEEN $from AND $to GROUP BY CAST((Step - $first) / $w AS INTEGER)
            UNION ALL
            SELECT Step, Value, TimeMs FROM metric_points WHERE SeriesId = $s AND Step IN ($first, $last)
            """;
        cmd.Parameters.AddWithValue("$s", seriesId);
        cmd.Parameters.AddWithValue("$from", from);
        cmd.Parameters.AddWithValue("$to", to);
        cmd.Parameters.AddWithValue("$first", first);
        cmd.Parameters.AddWithValue("$last", last);
        cmd.Parameters.AddWithValue("$w", width);
        var byStep = new SortedDictionary<long, MetricValue>();
        await using var reader = await cmd.ExecuteReaderAsync(cancel);
        while (await reader.ReadAsync(cancel))
        {
            var v = new MetricValue(reader.GetInt64(0), reader.GetDouble(1), reader.GetInt64(2));
            byStep[v.Step] = v;
        }
        return [.. byStep.Values];
    }
}
