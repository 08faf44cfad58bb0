using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Web.Tests;

public class LibraryApiTests : IAsyncLifetime
{
    private readonly StudioFactory _factory = new() { Settings = { ["Studio:MaxUploadMegabytes"] = "1" } };
    private HttpClient _client = null!;
    private string DatasetRoot => Path.Combine(_factory.DataFolder, "datasets");
    private string ModelRoot => Path.Combine(_factory.DataFolder, "models");

    public Task InitializeAsync()
    {
        _client = _factory.CreateClient();
        Directory.CreateDirectory(DatasetRoot);
        Directory.CreateDirectory(ModelRoot);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _factory.DisposeAsync();

    private static StringContent Json(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    private static string Jsonl(int rows, int badLine = 0) => string.Join("\n", Enumerable.Range(1, rows).Select(i =>
        i == badLine ? "{\"prompt\": \"What is 1 + 1?\"}" : $"{{\"prompt\": \"What is {i} + 1?\", \"completion\": \"{i + 1}\"}}")) + "\n";

    [Fact]
    public async Task A_dataset_under_a_root_is_validated_and_registered_with_its_format_and_rows()
    {
        var path = Path.Combine(DatasetRoot, "qa.jsonl");
        await File.WriteAllTextAsync(path, Jsonl(30));
        var response = await _client.PostAsync("/api/datasets", Json(new { name = "qa", path }));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var record = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(30, record.GetProperty("rows").GetInt64());
        Assert.Contains("prompt", record.GetProperty("format").GetString(), StringComparison.OrdinalIgnoreCase);

        var list = await _client.GetFromJsonAsync<JsonElement>("/api/datasets");
        Assert.Contains(list.GetProperty("registered").EnumerateArray(), d => d.GetProperty("name").GetString() == "qa");
        Assert.Contains(list.GetProperty("builtin").EnumerateArray(), d => d.GetString() == "arithmetic");

        var preview = await _client.GetFromJsonAsync<JsonElement>($"/api/datasets/{record.GetProperty("id").GetInt64()}/preview?method=sft&rows=2");
        Assert.Equal(2, preview.GetProperty("rows").GetArrayLength());
        var text = preview.GetProperty("rows")[0].GetProperty("texts")[0];
        Assert.StartsWith("Question: What is 1 + 1?", text.GetProperty("prompt").GetString());
        Assert.True(text.GetProperty("promptTokens").GetInt32() > 0);
    }

    [Fact]
    public async Task A_malformed_dataset_is_refused_with_the_line_number_and_nothing_is_registered()
    {
        var path = Path.Combine(DatasetRoot, "broken.jsonl");
        await File.WriteAllTextAsync(path, Jsonl(10, badLine: 7));
        var response = await _client.PostAsync("/api/datasets", Json(new { name = "broken", path }));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Contains("line 7", body);
        Assert.Contains("completion", body);
        var list = await _client.GetFromJsonAsync<JsonElement>("/api/datasets");
        Assert.Equal(0, list.GetProperty("registered").GetArrayLength());
    }

    [Fact]
    public async Task A_dataset_path_outside_the_roots_is_refused()
    {
        var outside = Path.Combine(_factory.DataFolder, "elsewhere.jsonl");
        await File.WriteAllTextAsync(outside, Jsonl(3));
        var response = await _client.PostAsync("/api/datasets", Json(new { name = "x", path = Path.Combine(DatasetRoot, "..", "elsewhere.jsonl") }));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("outside the allowed folders", await response.Content.ReadAsStringAsync());
    }

    private static MultipartFormDataContent Upload(string fileName, byte[] content, string? name = null)
    {
        var form = new MultipartFormDataContent();
        if (name is not null) form.Add(new StringContent(name), "name");
        form.Add(new ByteArrayContent(content), "file", fileName);
        return form;
    }

    [Fact]
    public async Task An_upload_is_stored_validated_and_registered()
    {
        var response = await _client.PostAsync("/api/datasets/upload", Upload("mine.jsonl", Encoding.UTF8.GetBytes(Jsonl(12)), "mine"));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var record = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.True(record.GetProperty("uploaded").GetBoolean());
        Assert.True(File.Exists(record.GetProperty("path").GetString()));
        Assert.Equal(12, record.GetProperty("rows").GetInt64());
    }

    [Fact]
    public async Task An_oversized_upload_is_refused_with_413_and_nothing_is_stored()
    {
        var big = Encoding.UTF8.GetBytes(Jsonl(40_000)); // ~1.9 MB > 1 MB limit
        Assert.True(big.Length > 1024 * 1024 + 100_000);
        var response = await _client.PostAsync("/api/datasets/upload", Upload("big.jsonl", big, "big"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        var uploads = Path.Combine(_factory.DataFolder, "uploads");
        Assert.True(!Directory.Exists(uploads) || Directory.GetFiles(uploads).Length == 0);
        var list = await _client.GetFromJsonAsync<JsonElement>("/api/datasets");
        Assert.Equal(0, list.GetProperty("registered").GetArrayLength());
    }

    [Fact]
    public async Task A_malformed_upload_names_the_uploaded_file_and_line_and_leaves_no_file()
    {
        var response = await _client.PostAsync("/api/datasets/upload", Upload("prefs.jsonl", Encoding.UTF8.GetBytes(Jsonl(5, badLine: 4)), "prefs"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Contains("prefs.jsonl line 4", body);
        Assert.Empty(Directory.GetFiles(Path.Combine(_factory.DataFolder, "uploads")));
    }

    [Fact]
    public async Task A_file_of_another_kind_is_refused()
    {
        var response = await _client.PostAsync("/api/datasets/upload", Upload("model.pt", [1, 2, 3]));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains(".jsonl", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Builtin_datasets_can_be_previewed()
    {
        var preview = await _client.GetFromJsonAsync<JsonElement>("/api/datasets/builtin/arithmetic/preview?method=reward&rows=3");
        Assert.Equal(3, preview.GetProperty("rows").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, preview.GetProperty("problem").ValueKind);
    }

    [Fact]
    public async Task A_model_folder_is_inspected_and_registered_and_bad_folders_are_refused()
    {
        var folder = Path.Combine(ModelRoot, "tiny");
        var tokenizer = TextTokenizer.BuiltIn();
        using (var model = ModelPresets.Create("tiny", tokenizer.VocabSize, seed: 1))
            ModelSaver.Save(model, folder);
        tokenizer.Save(folder);

        var response = await _client.PostAsync("/api/models", Json(new { name = "tiny", path = folder }));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var detail = await response.Content.ReadFromJsonAsync<JsonElement>();
        var summary = detail.GetProperty("summary");
        Assert.Equal("LlamaForCausalLM", summary.GetProperty("architecture").GetString());
        Assert.Equal(4, summary.GetProperty("layers").GetInt32());
        Assert.True(summary.GetProperty("parameters").GetProperty("total").GetInt64() > 1_000_000);
        Assert.True(summary.GetProperty("storedDTypes").GetProperty("F32").GetInt64() > 0);
        Assert.Equal("<|endoftext|>", summary.GetProperty("eosToken").GetString());

        var models = await _client.GetFromJsonAsync<JsonElement>("/api/models");
        Assert.Contains(models.GetProperty("presets").EnumerateArray(), p => p.GetProperty("name").GetString() == "tiny");

        var empty = Path.Combine(ModelRoot, "empty");
        Directory.CreateDirectory(empty);
        var bad = await _client.PostAsync("/api/models", Json(new { name = "empty", path = empty }));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("config.json", await bad.Content.ReadAsStringAsync());

        File.WriteAllBytes(Path.Combine(empty, "pytorch_model.bin"), [0x80, 2]);
        File.WriteAllText(Path.Combine(empty, "config.json"), File.ReadAllText(Path.Combine(folder, "config.json")));
        var pickle = await _client.PostAsync("/api/models", Json(new { name = "pickle", path = empty }));
        Assert.Equal(HttpStatusCode.BadRequest, pickle.StatusCode);
        Assert.Contains("pickle", await pickle.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
    }
}
