using System.Text.Json.Nodes;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Cli.Commands;

/// <summary>Renders <see cref="ModelInspection"/> for <c>model inspect</c> (text or JSON).</summary>
internal sealed record ModelReport(ModelInspection Inspection)
{
    private string Folder => Inspection.Folder;
    private ModelConfig Config => Inspection.Config;
    private ParameterCounts Parameters => Inspection.Parameters;
    private IReadOnlyDictionary<string, long> StoredDTypes => Inspection.StoredDTypes;
    private IReadOnlyList<string> WeightFiles => Inspection.WeightFiles;
    private TextTokenizer? Tokenizer => Inspection.Tokenizer;
    private string? TokenizerError => Inspection.TokenizerError;
    private string DefaultTemplate => Inspection.DefaultTemplate;

    public static ModelReport Read(string folder) => new(ModelInspection.Inspect(folder));

    public JsonObject ToJson()
    {
        var c = Config;
        var o = new JsonObject
        {
            ["folder"] = Folder,
            ["architecture"] = c.Architectures.Count > 0 ? c.Architectures[0] : c.ArchitectureFor(c.Head),
            ["model_type"] = c.ModelType,
            ["hidden_size"] = c.HiddenSize,
            ["num_hidden_layers"] = c.NumHiddenLayers,
            ["num_attention_heads"] = c.NumAttentionHeads,
            ["num_key_value_heads"] = c.NumKeyValueHeads,
            ["head_dim"] = c.HeadDim,
            ["intermediate_size"] = c.IntermediateSize,
            ["vocab_size"] = c.VocabSize,
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["tie_word_embeddings"] = c.TieWordEmbeddings,
            ["parameters"] = new JsonObject
            {
                ["total"] = Parameters.Total,
                ["non_embedding"] = Parameters.NonEmbedding,
                ["embedding"] = Parameters.Embedding,
            },
            ["stored_dtypes"] = new JsonObject(StoredDTypes.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["weight_files"] = new JsonArray(WeightFiles.Select(f => (JsonNode?)f).ToArray()),
            ["default_template"] = DefaultTemplate,
        };
        if (Tokenizer is { } t)
            o["tokenizer"] = new JsonObject
            {
                ["kind"] = t.Kind.ToString(),
                ["vocab_size"] = t.VocabSize,
                ["bos"] = Special(t.BosToken, t.BosId),
                ["eos"] = Special(t.EosToken, t.EosId),
                ["pad"] = Special(t.PadToken, t.PadId),
                ["unk"] = Special(t.UnkToken, t.UnkId),
                ["pad_is_eos"] = t.PadIsEos,
                ["add_bos"] = t.AddBosByDefault,
                ["has_chat_template"] = t.ChatTemplate is not null,
            };
        else
            o["tokenizer"] = new JsonObject { ["error"] = TokenizerError };
        return o;
    }

    private static JsonNode? Special(string? token, int? id) =>
        token is null ? null : new JsonObject { ["token"] = token, ["id"] = id };

    public void WriteText(TextWriter w)
    {
        var c = Config;
        void Line(string key, object? value) => w.WriteLine($"{key,-24}{value}");
        Line("folder", Folder);
        Line("architecture", c.Architectures.Count > 0 ? c.Architectures[0] : c.ArchitectureFor(c.Head));
        Line("model_type", c.ModelType);
        Line("hidden_size", c.HiddenSize);
        Line("num_hidden_layers", c.NumHiddenLayers);
        Line("num_attention_heads", c.NumAttentionHeads);
        Line("num_key_value_heads", c.NumKeyValueHeads);
        Line("head_dim", c.HeadDim);
        Line("intermediate_size", c.IntermediateSize);
        Line("vocab_size", c.VocabSize);
        Line("max_positions", c.MaxPositionEmbeddings);
        Line("tie_word_embeddings", c.TieWordEmbeddings ? "true" : "false");
        Line("parameters", $"{Parameters.Total:N0} total, {Parameters.NonEmbedding:N0} non-embedding");
        Line("stored_dtypes", string.Join(", ", StoredDTypes.Select(kv => $"{kv.Key} ({kv.Value} tensors)")));
        Line("weight_files", string.Join(", ", WeightFiles));
        if (Tokenizer is { } t)
        {
            Line("tokenizer", $"{t.Kind}, {t.VocabSize} ids{(t.ChatTemplate is not null ? ", chat template" : "")}");
            string S(string? token, int? id) => token is null ? "-" : $"{token} ({id})";
            Line("special_tokens", $"bos={S(t.BosToken, t.BosId)} eos={S(t.EosToken, t.EosId)} pad={S(t.PadToken, t.PadId)}{(t.PadIsEos ? " (=eos)" : "")} unk={S(t.UnkToken, t.UnkId)}");
        }
        else Line("tokenizer", $"not loadable: {TokenizerError}");
        Line("default_template", DefaultTemplate);
    }
}
