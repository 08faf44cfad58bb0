using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Web.Services;

/// <summary>A dataset or model that cannot be registered, with every problem found (file, line, column).</summary>
public sealed class LibraryException(string title, IReadOnlyList<string> problems) : Exception(title + ": " + string.Join("; ", problems))
{
    public string Title { get; } = title;
    public IReadOnlyList<string> Problems { get; } = problems;
}

/// <summary>Registered datasets: a path under the dataset roots, or an upload. Nothing is registered
/// before a validation scan found no problem; a refused upload leaves no file behind.</summary>
public sealed class DatasetLibrary(IDbContextFactory<StudioDbContext> dbFactory, IOptions<StudioOptions> options)
{
    public static readonly IReadOnlyList<string> Extensions = [".jsonl", ".json", ".parquet"];

    /// <summary>The method a dataset of this format is most naturally used for (validation and preview default).</summary>
    public static TrainingMethod MethodFor(DatasetFormat? format) => format switch
    {
        DatasetFormat.Preference or DatasetFormat.StackExchangePaired or DatasetFormat.StackExchangeScored => TrainingMethod.Reward,
        DatasetFormat.PromptOnly => TrainingMethod.Ppo,
        _ => TrainingMethod.Sft,
    };

    public async Task<DatasetRecord> RegisterPathAsync(string name, string path, CancellationToken cancel = default)
    {
        ValidateName(name);
        string real;
        try { real = PathGuard.EnsureUnder(path, options.Value.AllowedDatasetRoots, "dataset"); }
        catch (Exception e) when (e is UnauthorizedAccessException or ArgumentException or IOException) { throw new LibraryException("The dataset path is refused", [e.Message]); }
        var (format, rows) = await Task.Run(() => Validate(real), cancel);
        return await AddAsync(name, real, format, rows, uploaded: false, cancel);
    }

    /// <summary>Stores an uploaded file (at most <paramref name="maxBytes"/>), validates it and registers it.</summary>
    public async Task<DatasetRecord> UploadAsync(string name, string fileName, Stream content, long maxBytes, CancellationToken cancel = default)
    {
        ValidateName(name);
        var ext = Path.GetExtension(fileName).ToLowerInvariant();
        if (!Extensions.Contains(ext)) throw new LibraryException("The upload is refused", [$"\"{fileName}\": only {string.Join(", ", Extensions)} files are accepted"]);
        Directory.CreateDirectory(options.Value.UploadsPath);
        var final = Path.Combine(options.Value.UploadsPath, SafeFileName(name) + ext);
        if (File.Exists(final)) throw new LibraryException("The upload is refused", [$"a dataset file named {Path.GetFileName(final)} already exists"]);
        var temp = Path.Combine(options.Value.UploadsPath, $".upload-{Guid.NewGuid():N}{ext}");
        try
        {
            await using (var file = File.Create(temp))
            {
                var buffer = new byte[1 << 16];
                long total = 0;
                int read;
                while ((read = await content.ReadAsync(buffer, cancel)) > 0)
                {
                    total += read;
                    if (total > maxBytes) throw new UploadTooLargeException(maxBytes);
                    await file.WriteAsync(buffer.AsMemory(0, read), cancel);
                }
            }
            var (format, rows) = await Task.Run(() => Validate(temp, displayName: fileName), cancel);
            File.Move(temp, final);
            return await AddAsync(name, final, format, rows, uploaded: true, cancel);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    public async Task<List<DatasetRecord>> ListAsync(CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        return await db.Datasets.AsNoTracking().OrderBy(d => d.Name).ToListAsync(cancel);
    }

    public async Task<DatasetRecord?> GetAsync(long id, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        return await db.Datasets.AsNoTracking().FirstOrDefaultAsync(d => d.Id == id, cancel);
    }

    public async Task<bool> DeleteAsync(long id, bool deleteFile, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var record = await db.Datasets.FirstOrDefaultAsync(d => d.Id == id, cancel);
        if (record is null) return false;
        db.Datasets.Remove(record);
        await db.SaveChangesAsync(cancel);
        if (deleteFile && record.Uploaded && File.Exists(record.Path)) File.Delete(record.Path);
        return true;
    }

    /// <summary>Preview of a dataset as a method's trainer will see it (template applied, tokens counted with the built-in tokenizer).</summary>
    public static DatasetPreview Preview(DatasetRef source, TrainingMethod? method, int rows = 5) =>
        DatasetPreview.Create(source, method ?? TrainingMethod.Sft, new PreviewOptions { Rows = rows, Tokenizer = TextTokenizer.BuiltIn() });

    private static (DatasetFormat Format, long? Rows) Validate(string path, string? displayName = null)
    {
        var source = new DatasetRef { Path = path, EvalFraction = 0 };
        try { DatasetFiles.Find(path); }
        catch (DatasetException e) { throw new LibraryException("The dataset cannot be read", [Rename(e.Message, path, displayName)]); }
        var first = DatasetPreview.Create(source, TrainingMethod.Sft, new PreviewOptions { Rows = 1, MaxErrors = 1 });
        var method = MethodFor(first.Format);
        var preview = method == TrainingMethod.Sft ? first : DatasetPreview.Create(source, method, new PreviewOptions { Rows = 1, MaxErrors = 1 });
        if (preview.Format is null && preview.Problem is not null) throw new LibraryException("The dataset cannot be used", [Rename(preview.Problem, path, displayName)]);
        var full = DatasetPreview.Create(source, method, new PreviewOptions { Rows = 0, MaxErrors = 20, ScanRows = long.MaxValue });
        var problems = new List<string>();
        if (full.Problem is not null) problems.Add(full.Problem);
        problems.AddRange(full.Errors.Select(e => e.Text));
        if (problems.Count > 0) throw new LibraryException("The dataset has problems", problems.Distinct().Select(p => Rename(p, path, displayName)).ToList());
        return (full.Format!.Value, full.TotalRows + (full.EvalRows ?? 0));
    }

    // Messages name the stored temporary file; the user knows it by the name they uploaded.
    private static string Rename(string message, string path, string? displayName) =>
        displayName is null ? message : message.Replace(Path.GetFileName(path), displayName).Replace(path, displayName);

    private async Task<DatasetRecord> AddAsync(string name, string path, DatasetFormat format, long? rows, bool uploaded, CancellationToken cancel)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        if (await db.Datasets.AnyAsync(d => d.Name == name, cancel)) throw new LibraryException("The dataset is refused", [$"a dataset named \"{name}\" is already registered"]);
        long size = File.Exists(path) ? new FileInfo(path).Length
            : Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        var record = new DatasetRecord { Name = name, Path = path, Format = DatasetFormats.Describe(format), Rows = rows, SizeBytes = size, Uploaded = uploaded, CreatedAt = DateTimeOffset.UtcNow };
        db.Datasets.Add(record);
        await db.SaveChangesAsync(cancel);
        return record;
    }

    private static void ValidateName(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Length > 100) throw new LibraryException("The name is refused", ["give a name of 1 to 100 characters"]);
    }

    private static string SafeFileName(string name) =>
        new string(name.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_').ToArray()).Trim('.');
}

/// <summary>The upload exceeded the configured size limit.</summary>
public sealed class UploadTooLargeException(long limit) : Exception($"the upload is larger than the limit of {limit / 1048576.0:N0} MB")
{
    public long Limit { get; } = limit;
}

/// <summary>Registered model folders under the model roots, plus the built-in presets.</summary>
public sealed class ModelLibrary(IDbContextFactory<StudioDbContext> dbFactory, IOptions<StudioOptions> options)
{
    public sealed record PresetInfo(string Name, string Architecture, long Parameters, int HiddenSize, int Layers, int Heads, string Tokenizer);

    private static readonly Lazy<IReadOnlyList<PresetInfo>> PresetList = new(() =>
    {
        var tokenizer = TextTokenizer.BuiltIn();
        return ModelPresets.Names.Select(name =>
        {
            var c = ModelPresets.Config(name, tokenizer.VocabSize);
            using var model = new CausalLanguageModel(c);
            return new PresetInfo(name, c.ArchitectureFor(ModelHead.CausalLM), model.CountParameters().Total, c.HiddenSize,
                c.NumHiddenLayers, c.NumAttentionHeads, $"built-in byte-level BPE ({tokenizer.VocabSize} tokens)");
        }).ToList();
    });

    public static IReadOnlyList<PresetInfo> Presets => PresetList.Value;

    public async Task<(ModelRecord Record, ModelInspection Summary)> RegisterAsync(string name, string path, CancellationToken cancel = default)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Length > 100) throw new LibraryException("The name is refused", ["give a name of 1 to 100 characters"]);
        string real;
        try { real = PathGuard.EnsureUnder(path, options.Value.ModelRoots, "model"); }
        catch (Exception e) when (e is UnauthorizedAccessException or ArgumentException or IOException) { throw new LibraryException("The model path is refused", [e.Message]); }
        ModelInspection summary;
        try { summary = await Task.Run(() => ModelInspection.Inspect(real), cancel); }
        catch (ModelLoadException e) { throw new LibraryException("The model cannot be used", [e.Message]); }
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        if (await db.Models.AnyAsync(m => m.Name == name, cancel)) throw new LibraryException("The model is refused", [$"a model named \"{name}\" is already registered"]);
        var record = new ModelRecord
        {
            Name = name, Path = real, Architecture = summary.Architecture, Parameters = summary.Parameters.Total,
            Tokenizer = summary.TokenizerSummary ?? $"unusable: {summary.TokenizerError}", CreatedAt = DateTimeOffset.UtcNow,
        };
        db.Models.Add(record);
        await db.SaveChangesAsync(cancel);
        return (record, summary);
    }

    public async Task<List<ModelRecord>> ListAsync(CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        return await db.Models.AsNoTracking().OrderBy(m => m.Name).ToListAsync(cancel);
    }

    public async Task<bool> DeleteAsync(long id, CancellationToken cancel = default)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancel);
        var record = await db.Models.FirstOrDefaultAsync(m => m.Id == id, cancel);
        if (record is null) return false;
        db.Models.Remove(record);
        await db.SaveChangesAsync(cancel);
        return true;
    }
}
