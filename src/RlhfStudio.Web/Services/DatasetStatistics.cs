using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Web.Services;

/// <summary>Token lengths of the first rows of a dataset as a method's trainer sees them (template applied,
/// prompt + completion tokens, EOS included), plus the row counts the preview scan found.</summary>
public sealed record DatasetStats(string Dataset, TrainingMethod Method, long? TrainRows, long? EvalRows, int Measured,
    IReadOnlyList<int> Lengths, string Tokenizer, string? Problem)
{
    public int Max => Lengths.Count == 0 ? 0 : Lengths.Max();
    public double Mean => Lengths.Count == 0 ? 0 : Lengths.Average();

    /// <summary>The length below which <paramref name="fraction"/> of the measured texts fall.</summary>
    public int Percentile(double fraction)
    {
        if (Lengths.Count == 0) return 0;
        var sorted = Lengths.Order().ToList();
        return sorted[Math.Clamp((int)Math.Ceiling(fraction * sorted.Count) - 1, 0, sorted.Count - 1)];
    }

    /// <summary>Share of the texts longer than <paramref name="maxLength"/> (truncated in training).</summary>
    public double TruncatedShare(int maxLength) => Lengths.Count == 0 ? 0 : (double)Lengths.Count(l => l > maxLength) / Lengths.Count;

    public static DatasetStats Compute(DatasetRef source, TrainingMethod method, TextTokenizer tokenizer, string tokenizerName, int rows)
    {
        var preview = DatasetPreview.Create(source, method, new PreviewOptions { Rows = rows, ScanRows = rows, MaxErrors = 5, Tokenizer = tokenizer });
        var lengths = preview.Rows.SelectMany(r => r.Texts)
            .Where(t => t.PromptTokens is not null || t.CompletionTokens is not null)
            .Select(t => (t.PromptTokens ?? 0) + (t.CompletionTokens ?? 0)).ToList();
        return new DatasetStats(preview.Dataset, method, preview.TotalRows, preview.EvalRows, preview.Rows.Count, lengths, tokenizerName, preview.Problem);
    }
}
