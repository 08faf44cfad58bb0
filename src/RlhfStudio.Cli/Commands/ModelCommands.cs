using System.Text.Json;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Cli.Commands;

/// <summary><c>model inspect</c>, <c>model logits</c> and <c>model create-preset</c>.</summary>
internal static class ModelCommands
{
    public static CommandSpec Inspect { get; } = new("model inspect", ["DIR"], [], ["json"],
        "architecture, sizes, parameter counts, stored dtypes, tokenizer and default prompt template of a model folder",
        (args, output) =>
        {
            var report = ModelReport.Read(CommandHelpers.ModelFolder(args.Positional(0)));
            if (args.Flag("json")) output.Out.WriteLine(report.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else report.WriteText(output.Out);
            return 0;
        });

    public static CommandSpec Logits { get; } = new("model logits", ["DIR"], ["ids", "dtype"], [],
        "logits of one token sequence as JSON {\"ids\": [...], \"logits\": [[vocab floats] per position]} (fp32), for parity checks",
        (args, output) =>
        {
            var folder = CommandHelpers.ModelFolder(args.Positional(0));
            var ids = ParseIds(args.String("ids") ?? throw new UsageException("--ids is required, e.g. --ids 1,2,3"));
            var dtype = CommandHelpers.DType(args);
            using var model = ModelLoader.Load(folder, dtype);
            var bad = ids.FirstOrDefault(id => id >= model.Config.VocabSize, -1);
            if (bad >= 0) throw new UsageException($"--ids: token id {bad} is outside the vocabulary (0..{model.Config.VocabSize - 1})");
            using var noGrad = torch.no_grad();
            using var scope = NewDisposeScope();
            var input = torch.tensor(ids, [1, ids.Length], dtype: ScalarType.Int64);
            var logits = model.Forward(input).squeeze(0).to(ScalarType.Float32).contiguous();   // (T, V)
            WriteLogitsJson(output.Out, ids, logits.data<float>().ToArray(), (int)logits.shape[1]);
            return 0;
        });

    public static CommandSpec CreatePreset { get; } = new("model create-preset", ["NAME", "OUTDIR"], ["seed", "dtype"], [],
        $"write a randomly initialised built-in model ({string.Join(", ", ModelPresets.Names)}) with the built-in tokenizer as a Hugging Face folder",
        (args, output) =>
        {
            var name = args.Positional(0);
            if (!ModelPresets.Names.Contains(name))
                throw new UsageException($"unknown preset \"{name}\" (presets: {string.Join(", ", ModelPresets.Names)})");
            var folder = args.Positional(1);
            if (File.Exists(folder) || Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any())
                throw new IOException($"{folder}: already exists and is not an empty folder; choose a new output folder");
            var tokenizer = TextTokenizer.BuiltIn();
            long seed = args.Long("seed", 0);
            using var model = ModelPresets.Create(name, tokenizer.VocabSize, seed, bosTokenId: tokenizer.BosId,
                eosTokenIds: tokenizer.EosId is int eos ? [eos] : [], padTokenId: tokenizer.PadId);
            ModelSaver.Save(model, folder, CommandHelpers.DType(args));
            tokenizer.Save(folder);
            var counts = model.CountParameters();
            output.Out.WriteLine($"wrote preset \"{name}\" (seed {seed}, {counts.Total:N0} parameters, vocab {tokenizer.VocabSize}) to {folder}");
            return 0;
        });

    private static long[] ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new UsageException("--ids needs at least one token id, e.g. --ids 1,2,3");
        return parts.Select(p => long.TryParse(p, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long id)
            ? id : throw new UsageException($"--ids: \"{p}\" is not a token id (non-negative integer)")).ToArray();
    }

    private static void WriteLogitsJson(TextWriter output, long[] ids, float[] values, int vocab)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            json.WriteStartArray("ids");
            foreach (var id in ids) json.WriteNumberValue(id);
            json.WriteEndArray();
            json.WriteStartArray("logits");
            for (int t = 0; t < ids.Length; t++)
            {
                json.WriteStartArray();
                for (int v = 0; v < vocab; v++) json.WriteNumberValue(values[t * vocab + v]);   // shortest round-trip text
                json.WriteEndArray();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        output.WriteLine(System.Text.Encoding.UTF8.GetString(stream.ToArray()));
    }
}
