using Microsoft.AspNetCore.Components;
using Microsoft.EntityFrameworkCore;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Models;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Components.Pages;

/// <summary>Generates from any checkpoint, final model, registered model or preset with chosen sampling settings,
/// streaming tokens as they come. One generation at a time per page (and per studio: the service queues).</summary>
public partial class Playground
{
    [Inject] private IDbContextFactory<StudioDbContext> DbFactory { get; set; } = null!;
    [Inject] private RunQueries Queries { get; set; } = null!;
    [Inject] private ModelSources Sources { get; set; } = null!;
    [Inject] private PlaygroundService Service { get; set; } = null!;
    [Inject] private ModelLibrary ModelLibrary { get; set; } = null!;

    [SupplyParameterFromQuery(Name = "run")] public long? RunParam { get; set; }
    [SupplyParameterFromQuery(Name = "checkpoint")] public long? CheckpointParam { get; set; }
    /// <summary>"final" picks the run's final model.</summary>
    [SupplyParameterFromQuery(Name = "final")] public bool FinalParam { get; set; }
    [SupplyParameterFromQuery(Name = "model")] public string? ModelParam { get; set; }
    [SupplyParameterFromQuery(Name = "preset")] public string? PresetParam { get; set; }
    [SupplyParameterFromQuery(Name = "prompt")] public string? PromptParam { get; set; }

    private sealed record HistoryItem(string Label, string Settings, string Prompt, string Output);

    private ModelSourceKind _kind = ModelSourceKind.Checkpoint;
    private List<RunRecord> _runs = [];
    private HashSet<long> _runsWithCheckpoints = [];
    private List<CheckpointDto> _checkpoints = [];
    private List<ModelRecord> _models = [];
    private long _runId, _step;
    private string _folder = "", _preset = ModelPresets.Names[0], _template = "";
    private int _maxNewTokens = 64, _topK;
    private double _temperature = 0.7, _topP = 1.0;
    private long _seed;
    private string _prompt = "";
    private string _output = "";
    private string? _currentLabel, _error, _status;
    private bool _running, _markdown = true;
    private PlaygroundResult? _result;
    private CancellationTokenSource? _cancel;
    private readonly List<HistoryItem> _history = [];
    private DateTime _lastRender;
    private bool _disposed;

    private IEnumerable<RunRecord> RunsWithCheckpoints => _runs.Where(r => _runsWithCheckpoints.Contains(r.Id));
    private IEnumerable<RunRecord> CompletedRuns => _runs.Where(r => r.Status == RunStatus.Completed && r.FinalModelPath is not null);

    protected override async Task OnInitializedAsync()
    {
        await using (var db = await DbFactory.CreateDbContextAsync())
        {
            _runs = await db.Runs.AsNoTracking().OrderByDescending(r => r.Id).ToListAsync();
            _runsWithCheckpoints = (await db.Checkpoints.AsNoTracking().Select(c => c.RunId).Distinct().ToListAsync()).ToHashSet();
        }
        _models = await ModelLibrary.ListAsync();
        _prompt = PromptParam ?? "";

        if (ModelParam is { Length: > 0 } folder) (_kind, _folder) = (ModelSourceKind.Folder, folder);
        else if (PresetParam is { Length: > 0 } preset) (_kind, _preset) = (ModelSourceKind.Preset, preset);
        else if (RunParam is long run && FinalParam) (_kind, _runId) = (ModelSourceKind.RunFinal, run);
        else
        {
            _runId = RunParam ?? RunsWithCheckpoints.FirstOrDefault()?.Id ?? 0;
            await LoadCheckpointsAsync(CheckpointParam);
        }
        if (string.IsNullOrEmpty(_prompt)) await SuggestPromptAsync();
    }

    private async Task OnKindChanged(ModelSourceKind kind)
    {
        _kind = kind;
        if (kind == ModelSourceKind.RunFinal) _runId = CompletedRuns.FirstOrDefault()?.Id ?? 0;
        if (kind == ModelSourceKind.Checkpoint) { _runId = RunsWithCheckpoints.FirstOrDefault()?.Id ?? 0; await LoadCheckpointsAsync(null); }
        if (kind == ModelSourceKind.Folder) _folder = _models.FirstOrDefault()?.Path ?? "";
    }

    private async Task OnRunChanged(long runId)
    {
        _runId = runId;
        await LoadCheckpointsAsync(null);
    }

    private async Task LoadCheckpointsAsync(long? step)
    {
        _checkpoints = _runId > 0 ? (await Queries.CheckpointsAsync(_runId)).OrderByDescending(c => c.Step).ToList() : [];
        _step = step is long s && _checkpoints.Any(c => c.Step == s) ? s : _checkpoints.FirstOrDefault()?.Step ?? 0;
    }

    /// <summary>A prompt to start from: the run's first sampled prompt, else a built-in arithmetic question.</summary>
    private async Task SuggestPromptAsync()
    {
        if (_runId > 0)
        {
            var samples = await Queries.SamplesAsync(_runId);
            if (samples.Count > 0) { _prompt = samples[0].Prompt; return; }
        }
        _prompt = BuiltinDatasets.Rows(BuiltinDatasets.ArithmeticPrompts, "test", 42).First().Values.GetValueOrDefault("prompt")?.ToString() ?? "";
    }

    private static string CheckpointLabel(CheckpointDto c) =>
        c.Metrics.Count == 0 ? "" : "· " + string.Join(", ", c.Metrics.Take(2).Select(kv => $"{kv.Key.Split('/').Last()} {kv.Value:G3}"));

    private ModelSource Source => _kind switch
    {
        ModelSourceKind.Checkpoint => ModelSource.Checkpoint(_runId, _step),
        ModelSourceKind.RunFinal => ModelSource.Final(_runId),
        ModelSourceKind.Folder => ModelSource.Folder(_folder),
        _ => ModelSource.Preset(_preset),
    };

    private async Task GenerateAsync()
    {
        if (_running) return;
        _error = null;
        _result = null;
        _output = "";
        _running = true;
        _cancel = new CancellationTokenSource();
        var settings = new PlaygroundSettings(_maxNewTokens, _temperature, _topK, _topP, _seed,
            Template: _template is "" or "none" ? null : _template, UseTemplate: _template != "none");
        try
        {
            var model = await Sources.ResolveAsync(Source);
            _currentLabel = model.Label;
            _status = Service.Busy ? "waiting for another generation to finish…" : "loading the model…";
            StateHasChanged();
            var prompt = _prompt;
            _result = await Service.GenerateAsync(model, prompt, settings, OnText, _cancel.Token);
            _output = _result.Text;
            _history.Insert(0, new HistoryItem(model.Label, $"T={_temperature:G3} k={_topK} p={_topP:G3} seed={_seed}", prompt, _result.Text));
            if (_history.Count > 10) _history.RemoveAt(_history.Count - 1);
        }
        catch (OperationCanceledException)
        {
            _error = "Stopped before the generation started.";
        }
        catch (Exception e) when (e is ModelSourceException or ArgumentException or IOException or InvalidOperationException
                                  or RlhfStudio.Engine.IO.ModelLoadException or RlhfStudio.Engine.Text.TokenizerLoadException or RlhfStudio.Engine.Jobs.RunSpecException)
        {
            _error = e.Message;
        }
        finally
        {
            _running = false;
            _cancel.Dispose();
            _cancel = null;
        }
    }

    /// <summary>Called on the generation thread after each token: keep the text, render at most ~12 times a second.</summary>
    private void OnText(string text)
    {
        _output = text;
        _status = "generating…";
        if (_disposed || DateTime.UtcNow - _lastRender < TimeSpan.FromMilliseconds(80)) return;
        _lastRender = DateTime.UtcNow;
        _ = InvokeAsync(StateHasChanged);
    }

    private void Stop() => _cancel?.Cancel();

    private static string Shorten(string s) => s.Length <= 120 ? s : s[..117] + "…";

    public void Dispose()
    {
        _disposed = true;
        _cancel?.Cancel();
    }
}
