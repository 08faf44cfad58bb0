using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using RlhfStudio.Data.Entities;
using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Web.Services;

namespace RlhfStudio.Web.Api;

/// <summary>Datasets and models: register, upload, preview, list, delete.</summary>
public static class LibraryApi
{
    public static IEndpointRouteBuilder MapLibraryApi(this IEndpointRouteBuilder app)
    {
        var datasets = app.MapGroup("/api/datasets").WithTags("Datasets");
        datasets.MapGet("/", ListDatasets).WithName("ListDatasets").WithSummary("Registered datasets and the built-in ones.");
        datasets.MapPost("/", RegisterDataset).WithName("RegisterDataset")
            .WithSummary("Registers a JSONL/Parquet file or shard folder under the dataset roots after a validation scan ({name, path}).");
        datasets.MapPost("/upload", UploadDataset).WithName("UploadDataset").DisableAntiforgery()
            .WithSummary("Uploads a .jsonl/.json/.parquet file (multipart field \"file\", optional \"name\"); 413 above Studio:MaxUploadMegabytes.");
        datasets.MapGet("/{id:long}/preview", PreviewDataset).WithName("PreviewDataset")
            .WithSummary("The first rows as a method's trainer sees them (?method=sft&rows=5), with the problems a scan finds.");
        datasets.MapGet("/builtin/{name}/preview", PreviewBuiltin).WithName("PreviewBuiltinDataset").WithSummary("Preview of a built-in dataset.");
        datasets.MapDelete("/{id:long}", DeleteDataset).WithName("DeleteDataset").WithSummary("Unregisters a dataset; ?files=true also deletes an uploaded file.");

        var models = app.MapGroup("/api/models").WithTags("Models");
        models.MapGet("/", ListModels).WithName("ListModels").WithSummary("Registered model folders and the built-in presets.");
        models.MapPost("/", RegisterModel).WithName("RegisterModel").WithSummary("Registers a Hugging Face model folder under the model roots ({name, path}).");
        models.MapGet("/{id:long}", GetModel).WithName("GetModel").WithSummary("A registered model with its architecture, parameter counts and tokenizer.");
        models.MapDelete("/{id:long}", DeleteModel).WithName("DeleteModel").WithSummary("Unregisters a model (its files stay).");
        return app;
    }

    public sealed record RegisterRequest(string Name, string Path);

    public sealed record DatasetsResponse(IReadOnlyList<DatasetRecord> Registered, IReadOnlyList<string> Builtin);

    public sealed record ModelsResponse(IReadOnlyList<ModelRecord> Registered, IReadOnlyList<ModelLibrary.PresetInfo> Presets);

    private static ProblemHttpResult Problem(LibraryException e, int status = 400) =>
        TypedResults.Problem(title: e.Title, detail: string.Join("\n", e.Problems), statusCode: status,
            extensions: new Dictionary<string, object?> { ["problems"] = e.Problems });

    private static async Task<Ok<DatasetsResponse>> ListDatasets(DatasetLibrary library, CancellationToken cancel) =>
        TypedResults.Ok(new DatasetsResponse(await library.ListAsync(cancel), BuiltinDatasets.Names));

    private static async Task<Results<Created<DatasetRecord>, ProblemHttpResult>> RegisterDataset(RegisterRequest request, DatasetLibrary library, CancellationToken cancel)
    {
        try
        {
            var record = await library.RegisterPathAsync(request.Name, request.Path, cancel);
            return TypedResults.Created($"/api/datasets/{record.Id}", record);
        }
        catch (LibraryException e) { return Problem(e); }
    }

    private static async Task<Results<Created<DatasetRecord>, ProblemHttpResult>> UploadDataset(HttpRequest request, DatasetLibrary library,
        IOptions<StudioOptions> options, CancellationToken cancel)
    {
        long limit = options.Value.MaxUploadMegabytes * 1024 * 1024;
        var tooLarge = TypedResults.Problem(title: "The upload is too large",
            detail: $"datasets larger than {options.Value.MaxUploadMegabytes:N0} MB are refused (Studio:MaxUploadMegabytes)", statusCode: 413);
        if (request.ContentLength > limit + 64 * 1024) return tooLarge; // known up front: refuse before reading
        var sizeFeature = request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (sizeFeature is { IsReadOnly: false }) sizeFeature.MaxRequestBodySize = limit + 64 * 1024;
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var type) || !type.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            return TypedResults.Problem(title: "Send the file as multipart/form-data", statusCode: 400);
        var boundary = HeaderUtilities.RemoveQuotes(type.Boundary).Value;
        if (string.IsNullOrEmpty(boundary)) return TypedResults.Problem(title: "The multipart boundary is missing", statusCode: 400);
        try
        {
            var reader = new MultipartReader(boundary, request.Body);
            string? name = null;
            MultipartSection? section;
            while ((section = await reader.ReadNextSectionAsync(cancel)) is not null)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition)) continue;
                var field = HeaderUtilities.RemoveQuotes(disposition.Name).Value;
                if (disposition.IsFileDisposition() && field == "file")
                {
                    var fileName = Path.GetFileName(HeaderUtilities.RemoveQuotes(disposition.FileName).Value ?? "upload.jsonl");
                    var record = await library.UploadAsync(name ?? Path.GetFileNameWithoutExtension(fileName), fileName, section.Body, limit, cancel);
                    return TypedResults.Created($"/api/datasets/{record.Id}", record);
                }
                if (field == "name") name = (await new StreamReader(section.Body).ReadToEndAsync(cancel)).Trim();
            }
            return TypedResults.Problem(title: "No file in the upload", detail: "send the dataset in a form field named \"file\"", statusCode: 400);
        }
        catch (UploadTooLargeException) { return tooLarge; }
        catch (BadHttpRequestException e) when (e.StatusCode == 413) { return tooLarge; }
        catch (LibraryException e) { return Problem(e); }
    }

    private static async Task<Results<Ok<DatasetPreview>, NotFound, BadRequest<string>>> PreviewDataset(long id, DatasetLibrary library,
        string? method, int? rows, CancellationToken cancel)
    {
        var record = await library.GetAsync(id, cancel);
        if (record is null) return TypedResults.NotFound();
        if (!TryMethod(method, out var m)) return TypedResults.BadRequest("method must be sft, reward, ppo, rloo or dpo");
        return TypedResults.Ok(await Task.Run(() => DatasetLibrary.Preview(new DatasetRef { Path = record.Path }, m, Math.Clamp(rows ?? 5, 0, 50)), cancel));
    }

    private static async Task<Results<Ok<DatasetPreview>, NotFound, BadRequest<string>>> PreviewBuiltin(string name, string? method, int? rows, CancellationToken cancel)
    {
        if (!BuiltinDatasets.Names.Contains(name)) return TypedResults.NotFound();
        if (!TryMethod(method, out var m)) return TypedResults.BadRequest("method must be sft, reward, ppo, rloo or dpo");
        return TypedResults.Ok(await Task.Run(() => DatasetLibrary.Preview(new DatasetRef { Builtin = name }, m, Math.Clamp(rows ?? 5, 0, 50)), cancel));
    }

    private static bool TryMethod(string? text, out TrainingMethod? method)
    {
        method = null;
        if (string.IsNullOrEmpty(text)) return true;
        if (!Enum.TryParse<TrainingMethod>(text, ignoreCase: true, out var m)) return false;
        method = m;
        return true;
    }

    private static async Task<Results<NoContent, NotFound>> DeleteDataset(long id, DatasetLibrary library, CancellationToken cancel, bool files = false) =>
        await library.DeleteAsync(id, files, cancel) ? TypedResults.NoContent() : TypedResults.NotFound();

    private static async Task<Ok<ModelsResponse>> ListModels(ModelLibrary library, CancellationToken cancel) =>
        TypedResults.Ok(new ModelsResponse(await library.ListAsync(cancel), ModelLibrary.Presets));

    public sealed record ModelDetail(ModelRecord Record, ModelInspection? Summary, string? Problem);

    private static async Task<Results<Created<ModelDetail>, ProblemHttpResult>> RegisterModel(RegisterRequest request, ModelLibrary library, CancellationToken cancel)
    {
        try
        {
            var (record, summary) = await library.RegisterAsync(request.Name, request.Path, cancel);
            return TypedResults.Created($"/api/models/{record.Id}", new ModelDetail(record, summary, null));
        }
        catch (LibraryException e) { return Problem(e); }
    }

    private static async Task<Results<Ok<ModelDetail>, NotFound>> GetModel(long id, ModelLibrary library, CancellationToken cancel)
    {
        var record = (await library.ListAsync(cancel)).FirstOrDefault(m => m.Id == id);
        if (record is null) return TypedResults.NotFound();
        try { return TypedResults.Ok(new ModelDetail(record, await Task.Run(() => ModelInspection.Inspect(record.Path), cancel), null)); }
        catch (ModelLoadException e) { return TypedResults.Ok(new ModelDetail(record, null, e.Message)); }
    }

    private static async Task<Results<NoContent, NotFound>> DeleteModel(long id, ModelLibrary library, CancellationToken cancel) =>
        await library.DeleteAsync(id, cancel) ? TypedResults.NoContent() : TypedResults.NotFound();
}
