using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace RlhfStudio.Data;

/// <summary>Creates, migrates and configures the studio's SQLite file.</summary>
public static class StudioDatabase
{
    public const string FileName = "studio.db";

    /// <summary>Connection string for the database file in <paramref name="dataFolder"/>.</summary>
    public static string ConnectionString(string dataFolder) => new SqliteConnectionStringBuilder
    {
        DataSource = Path.Combine(Path.GetFullPath(dataFolder), FileName),
        Mode = SqliteOpenMode.ReadWriteCreate,
        Cache = SqliteCacheMode.Private,
        Pooling = true,
        DefaultTimeout = 30,
    }.ToString();

    /// <summary>Options for a context over the database file in <paramref name="dataFolder"/>.</summary>
    public static DbContextOptions<StudioDbContext> Options(string dataFolder) =>
        Configure(new DbContextOptionsBuilder<StudioDbContext>(), dataFolder).Options;

    public static TBuilder Configure<TBuilder>(TBuilder builder, string dataFolder) where TBuilder : DbContextOptionsBuilder
    {
        builder.UseSqlite(ConnectionString(dataFolder), o => o.MigrationsAssembly(typeof(StudioDbContext).Assembly.FullName));
        return builder;
    }

    /// <summary>Creates the data folder and the database if missing, applies pending migrations and switches
    /// the file to WAL mode (readers never block the writer; a crash loses no committed batch).</summary>
    public static async Task InitializeAsync(string dataFolder, CancellationToken cancel = default)
    {
        Directory.CreateDirectory(dataFolder);
        await using var db = new StudioDbContext(Options(dataFolder));
        await db.Database.MigrateAsync(cancel);
        await using var connection = new SqliteConnection(ConnectionString(dataFolder));
        await connection.OpenAsync(cancel);
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
        await command.ExecuteNonQueryAsync(cancel);
    }

    /// <summary>The journal mode the file is in ("wal" after <see cref="InitializeAsync"/>).</summary>
    public static async Task<string> JournalModeAsync(string dataFolder)
    {
        await using var connection = new SqliteConnection(ConnectionString(dataFolder));
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode;";
        return (string)(await command.ExecuteScalarAsync() ?? "");
    }
}

/// <summary>Used by <c>dotnet ef migrations add</c> at design time only.</summary>
public sealed class DesignTimeStudioDbContextFactory : IDesignTimeDbContextFactory<StudioDbContext>
{
    public StudioDbContext CreateDbContext(string[] args) =>
        new(StudioDatabase.Options(Path.Combine(Path.GetTempPath(), "rlhfstudio-design")));
}
