using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage.ValueConversion;
using RlhfStudio.Data.Entities;

namespace RlhfStudio.Data;

/// <summary>The studio's records in one SQLite file. Entity sets are used directly (no repositories).</summary>
public sealed class StudioDbContext(DbContextOptions<StudioDbContext> options) : DbContext(options)
{
    public DbSet<RunRecord> Runs => Set<RunRecord>();
    public DbSet<MetricSeries> MetricSeries => Set<MetricSeries>();
    public DbSet<MetricPoint> MetricPoints => Set<MetricPoint>();
    public DbSet<SampleRecord> Samples => Set<SampleRecord>();
    public DbSet<CheckpointRecord> Checkpoints => Set<CheckpointRecord>();
    public DbSet<RunEventRecord> RunEvents => Set<RunEventRecord>();
    public DbSet<DatasetRecord> Datasets => Set<DatasetRecord>();
    public DbSet<ModelRecord> Models => Set<ModelRecord>();
    public DbSet<MachineBenchmarkRecord> MachineBenchmarks => Set<MachineBenchmarkRecord>();

    protected override void ConfigureConventions(ModelConfigurationBuilder builder)
    {
        // SQLite cannot order or compare DateTimeOffset; store it as Unix milliseconds.
        builder.Properties<DateTimeOffset>().HaveConversion<DateTimeOffsetToMillisecondsConverter>();
    }

    protected override void OnModelCreating(ModelBuilder b)
    {
        b.Entity<RunRecord>(e =>
        {
            e.ToTable("runs");
            e.Property(r => r.Status).HasConversion<string>().HasMaxLength(16);
            e.Property(r => r.Method).HasMaxLength(16);
            e.HasIndex(r => r.Status);
            e.HasIndex(r => r.CreatedAt);
            e.HasMany(r => r.Checkpoints).WithOne().HasForeignKey(c => c.RunId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<MetricSeries>(e =>
        {
            e.ToTable("metric_series");
            e.HasIndex(s => new { s.RunId, s.Name }).IsUnique();
            e.HasOne<RunRecord>().WithMany().HasForeignKey(s => s.RunId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<MetricPoint>(e =>
        {
            e.ToTable("metric_points");
            e.HasKey(p => new { p.SeriesId, p.Step });
            e.HasOne<MetricSeries>().WithMany().HasForeignKey(p => p.SeriesId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<SampleRecord>(e =>
        {
            e.ToTable("samples");
            e.HasIndex(s => new { s.RunId, s.Table, s.Step, s.Index }).IsUnique();
            e.HasOne<RunRecord>().WithMany().HasForeignKey(s => s.RunId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<CheckpointRecord>(e =>
        {
            e.ToTable("checkpoints");
            e.HasIndex(c => new { c.RunId, c.Step }).IsUnique();
        });
        b.Entity<RunEventRecord>(e =>
        {
            e.ToTable("run_events");
            e.HasIndex(x => new { x.RunId, x.Id });
            e.HasOne<RunRecord>().WithMany().HasForeignKey(x => x.RunId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<DatasetRecord>(e =>
        {
            e.ToTable("datasets");
            e.HasIndex(d => d.Name).IsUnique();
        });
        b.Entity<ModelRecord>(e =>
        {
            e.ToTable("models");
            e.HasIndex(m => m.Name).IsUnique();
        });
        b.Entity<MachineBenchmarkRecord>(e => e.ToTable("machine_benchmarks"));
    }

    private sealed class DateTimeOffsetToMillisecondsConverter() : ValueConverter<DateTimeOffset, long>(
        v => v.ToUnixTimeMilliseconds(),
        v => DateTimeOffset.FromUnixTimeMilliseconds(v));
}
