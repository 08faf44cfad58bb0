using Microsoft.AspNetCore.Components;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using MudBlazor;
using RlhfStudio.Data;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Web.Components.Launch;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Components.Pages;

public partial class NewRun
{
    [Inject] private RunCatalog Catalog { get; set; } = null!;
    [Inject] private NavigationManager Navigation { get; set; } = null!;
    [Inject] private ISnackbar Snackbar { get; set; } = null!;
    [Inject] private ModelLibrary ModelLibrary { get; set; } = null!;
    [Inject] private DatasetLibrary DatasetLibrary { get; set; } = null!;
    [Inject] private MachineBenchmarkService Benchmarks { get; set; } = null!;
    [Inject] private IDbContextFactory<StudioDbContext> DbFactory { get; set; } = null!;
    [Inject] private IOptions<StudioOptions> Options { get; set; } = null!;

    /// <summary>Run whose spec pre-fills the form ("clone as new run").</summary>
    [SupplyParameterFromQuery(Name = "clone")] public long? CloneId { get; set; }
    /// <summary>Method to start with (sft, reward, ppo, rloo, dpo).</summary>
    [SupplyParameterFromQuery(Name = "method")] public string? MethodName { get; set; }

    private RunForm _form = new(RunPresets.For(RunPresets.QuickStart, TrainingMethod.Sft));
    private string _preset = RunPresets.QuickStart;
    private string _modelKind = "preset", _datasetKind = "builtin", _rewardKind = "builtin";
    private List<ModelRecord> _models = [];
    private List<DatasetRecord> _datasets = [];
    private List<RunRecord> _runs = [];
    private long? _clonedFrom;
    private int _tab;
    private string _json = "";
    private IReadOnlyList<SpecError> _jsonErrors = [];
    private List<SpecError> _pipelineErrors = [];
    private List<SpecError> _serverErrors = [];
    private bool _busy;
    private MachineBenchmarkDto? _benchmark;
    private long? _parameters;
    private string? _parameterSource;
    private DatasetPreview? _preview;
    private string? _previewError;
    private string? _modelKey, _previewKey;
    private RunSpec? _errorsFor;
    private IReadOnlyList<SpecError> _errors = [];

    // Fields that show their own errors; anything else is listed under the form.
    private static readonly string[] FieldsOnForm =
    [
        "name", "model", "dataset", "reward", "maxLength", "adapter", "training.learningRate", "training.maxSteps", "training.epochs",
        "training.batchSize", "training.gradientAccumulation", "training.warmupRatio", "training.weightDecay", "checkpoints.evalSteps",
        "checkpoints.saveSteps", "checkpoints.keepLast", "checkpoints.loggingSteps", "sampling.maxNewTokens", "sampling.temperature", "numSamples", "centerRewardsCoefficient",
        "klCoef", "numPpoEpochs", "numMiniBatches", "clipRange", "missingEosPenalty", "vfCoef", "gamma", "lam", "targetKl", "freezeActorSteps", "rlooK", "beta",
        "labelSmoothing", "rpoAlpha", "maxPromptLength",
    ];

    /// <summary>The spec's errors plus those the catalog found at the last launch (paths outside the roots);
    /// recomputed only when the spec changed (records are immutable: a change is a new instance).</summary>
    private IReadOnlyList<SpecError> Errors
    {
        get
        {
            if (!ReferenceEquals(_errorsFor, _form.Spec))
            {
                _errorsFor = _form.Spec;
                _errors = _form.Validate();
                _serverErrors = [];
            }
            return [.. _errors, .. _serverErrors];
        }
    }

    private List<SpecError> OtherErrors => Errors.Where(e => !FieldsOnForm.Any(f => RunForm.For([e], f).Any())).ToList();

    private bool Has(string field) => RunForm.For(Errors, field).Any();
    // Errors are shown as helper text with our own class: MudBlazor 9 clears a field's Error state when the field
    // validates itself on blur, so a parameter that stays true would not show again.
    private string ErrClass(string field, string extra = "") => (Has(field) ? "field-error " : "") + extra;
    private string Err(string field) => string.Join("; ", RunForm.For(Errors, field).Select(e => e.Message));

    private IReadOnlyList<RunRecord> CompletedRuns => _runs.Where(r => r.Status == RunStatus.Completed && r.FinalModelPath is not null).ToList();
    private IEnumerable<RunRecord> RewardRuns => CompletedRuns.Where(r => r.Method == "reward");

    private IReadOnlyList<RunSpec> PipelineStages
    {
        get
        {
            var stages = RunPresets.Pipeline(_preset, _form.Name).ToList();
            // the form's model and data feed the pipeline (StackExchange pairs serve all three stages in StackLLaMA)
            stages[0] = stages[0] with { Model = _form.Model };
            for (int i = 0; i < stages.Count; i++) stages[i] = stages[i] with { Dataset = _form.Dataset };
            return stages;
        }
    }

    protected override async Task OnInitializedAsync()
    {
        _models = await ModelLibrary.ListAsync();
        _datasets = await DatasetLibrary.ListAsync();
        await using (var db = await DbFactory.CreateDbContextAsync())
            _runs = await db.Runs.AsNoTracking().OrderByDescending(r => r.Id).ToListAsync();
        _benchmark = await Benchmarks.LatestAsync();

        if (CloneId is long id && _runs.FirstOrDefault(r => r.Id == id) is { } source)
        {
            var (spec, _) = RunForm.Parse(source.SpecJson);
            if (spec is not null)
            {
                _form = new RunForm(RunForm.CloneOf(spec));
                _clonedFrom = id;
            }
        }
        else if (Enum.TryParse<TrainingMethod>(MethodName, ignoreCase: true, out var method))
        {
            _form = new RunForm(RunPresets.For(_preset, method));
        }
        SyncKinds();
        await RefreshDerivedAsync();
    }

    private void SyncKinds()
    {
        _modelKind = ModelPicker.KindOf(_form.Model, _models);
        _datasetKind = _form.Dataset.Builtin is not null ? "builtin" : _datasets.Any(d => d.Path == _form.Dataset.Path) ? "registered" : "path";
        _rewardKind = _form.Reward switch { { RunId: not null } => "run", { ModelPath: not null } => "registered", _ => "builtin" };
    }

    private async Task ApplyPreset(string preset)
    {
        _preset = preset;
        _form = new RunForm(RunPresets.For(preset, _form.Method) with { Name = _form.Name });
        SyncKinds();
        await RefreshDerivedAsync();
    }

    private async Task OnMethodChanged(TrainingMethod method)
    {
        _form.Method = method;
        await RefreshDerivedAsync();
    }

    private async Task Reset()
    {
        _form = new RunForm(RunPresets.For(_preset, _form.Method));
        _clonedFrom = null;
        SyncKinds();
        await RefreshDerivedAsync();
    }

    private async Task OnModelChanged(ModelRef model)
    {
        _form.Model = model;
        await RefreshDerivedAsync();
    }

    private async Task OnDatasetKindChanged(string kind)
    {
        _datasetKind = kind;
        SetDataset(kind switch
        {
            "builtin" => _form.Dataset with { Builtin = BuiltinDatasets.Arithmetic, Path = null },
            "registered" => _form.Dataset with { Path = _datasets.FirstOrDefault()?.Path ?? "", Builtin = null },
            _ => _form.Dataset with { Path = _form.Dataset.Path ?? "", Builtin = null },
        });
        await RefreshDerivedAsync();
    }

    private void SetDataset(DatasetRef dataset)
    {
        _form.Dataset = dataset;
        _ = InvokeAsync(async () => { await RefreshDerivedAsync(); StateHasChanged(); });
    }

    private void OnRewardKindChanged(string kind)
    {
        _rewardKind = kind;
        _form.Reward = kind switch
        {
            "run" => new RewardSource { RunId = RewardRuns.FirstOrDefault()?.Id ?? 0 },
            "registered" => new RewardSource { ModelPath = _models.FirstOrDefault()?.Path ?? "" },
            _ => new RewardSource { Builtin = "arithmetic" },
        };
    }

    private void OnTabChanged(int tab)
    {
        _tab = tab;
        if (tab == 1)
        {
            _json = _form.Spec.ToJson();
            _jsonErrors = [];
        }
    }

    private async Task OnJsonChanged(string json)
    {
        _json = json;
        var (spec, errors) = RunForm.Parse(json);
        _jsonErrors = errors;
        if (spec is null) return;
        _form.Spec = spec;
        SyncKinds();
        await RefreshDerivedAsync();
    }

    /// <summary>Recomputes what depends on the model (parameter count) and on the data and method (preview), when they changed.</summary>
    private async Task RefreshDerivedAsync()
    {
        var spec = _form.Spec;
        var modelKey = spec.Model.ToString();
        if (modelKey != _modelKey)
        {
            _modelKey = modelKey;
            (_parameters, _parameterSource) = await CountParametersAsync(spec.Model, 0);
        }
        var previewKey = $"{spec.Method}|{spec.Dataset}|{spec.Dataset.Split}";
        if (previewKey != _previewKey)
        {
            _previewKey = previewKey;
            _preview = null;
            _previewError = null;
            try
            {
                var source = spec.Dataset;
                if (source.Path is { } path)
                {
                    if (string.IsNullOrWhiteSpace(path)) { _previewError = "Pick a dataset to preview its first rows."; return; }
                    source = source with { Path = PathGuard.EnsureUnder(path, Options.Value.AllowedDatasetRoots, "dataset") };
                }
                var method = spec.Method;
                _preview = await Task.Run(() => DatasetLibrary.Preview(source, method, 3));
            }
            catch (Exception e) when (e is UnauthorizedAccessException or ArgumentException or IOException)
            {
                _previewError = e.Message;
            }
        }
    }

    private async Task<(long?, string?)> CountParametersAsync(ModelRef model, int depth)
    {
        if (model.Preset is { } preset)
            return ModelLibrary.Presets.FirstOrDefault(p => p.Name == preset) is { } info ? (info.Parameters, $"preset {preset}") : (null, $"unknown preset \"{preset}\"");
        if (model.Path is { } path)
        {
            if (string.IsNullOrWhiteSpace(path)) return (null, "Pick a model to estimate its cost.");
            try
            {
                var real = PathGuard.EnsureUnder(path, Options.Value.ModelRoots, "model");
                var summary = await Task.Run(() => ModelInspection.Inspect(real));
                return (summary.Parameters.Total, $"{summary.Architecture} from config.json");
            }
            catch (Exception e) when (e is ModelLoadException or UnauthorizedAccessException or ArgumentException or IOException)
            {
                return (null, e.Message);
            }
        }
        if (model.RunId is long id && depth < 8 && _runs.FirstOrDefault(r => r.Id == id) is { } run)
        {
            var (spec, _) = RunForm.Parse(run.SpecJson);
            if (spec is not null)
            {
                var (n, source) = await CountParametersAsync(spec.Model, depth + 1);
                return (n, $"run #{id}, from {source}");
            }
        }
        return (null, "the model's size is unknown");
    }

    private async Task QueueAsync()
    {
        if (Errors.Count > 0)
        {
            Snackbar.Add("Fix the marked fields first.", Severity.Warning);
            return;
        }
        _busy = true;
        try
        {
            var run = await Catalog.QueueAsync(_form.Spec);
            Snackbar.Add($"Run #{run.Id} queued.", Severity.Success);
            Navigation.NavigateTo($"/runs/{run.Id}");
        }
        catch (RunSpecException e)
        {
            _serverErrors = [.. e.Errors];
            Snackbar.Add("The run was refused: see the marked fields.", Severity.Error);
        }
        finally
        {
            _busy = false;
        }
    }

    private async Task QueuePipelineAsync()
    {
        var stages = PipelineStages;
        _pipelineErrors = stages.SelectMany((s, i) => s.Validate().Select(e => e with { Field = $"stages[{i}].{e.Field}" })).ToList();
        if (_pipelineErrors.Count > 0) return;
        _busy = true;
        try
        {
            var runs = await Catalog.QueuePipelineAsync(stages);
            Snackbar.Add($"Pipeline queued: runs #{runs[0].Id}–#{runs[^1].Id}.", Severity.Success);
            Navigation.NavigateTo("/runs");
        }
        catch (RunSpecException e)
        {
            _pipelineErrors = [.. e.Errors];
        }
        finally
        {
            _busy = false;
        }
    }

    private static string MethodTitle(TrainingMethod m) => m switch
    {
        TrainingMethod.Sft => "SFT: supervised fine-tuning",
        TrainingMethod.Reward => "Reward model",
        TrainingMethod.Ppo => "PPO: proximal policy optimisation",
        TrainingMethod.Rloo => "RLOO: REINFORCE leave-one-out",
        _ => "DPO: direct preference optimisation",
    };
}
