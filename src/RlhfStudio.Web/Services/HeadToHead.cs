using RlhfStudio.Engine.Data;
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Text;

namespace RlhfStudio.Web.Services;

/// <summary>A head-to-head of two models on a prompt set. <see cref="Judge"/> null = the built-in arithmetic scorer.</summary>
public sealed record HeadToHeadRequest(ResolvedModel A, ResolvedModel B, ResolvedModel? Judge, IReadOnlyList<string> Prompts,
    int MaxNewTokens = 32, double TieThreshold = 0.05);

/// <summary>One prompt: both answers and their independent scores; <see cref="Margin"/> = A - B.</summary>
public sealed record HeadToHeadRow(string Prompt, string AnswerA, string AnswerB, double ScoreA, double ScoreB)
{
    public double Margin => ScoreA - ScoreB;
}

/// <summary>Counts from A's side: A wins when its score exceeds B's by more than the tie threshold.</summary>
public sealed record HeadToHeadResult(IReadOnlyList<HeadToHeadRow> Rows, int Wins, int Ties, int Losses, double TieThreshold, string JudgeName)
{
    public double WinRate => Rows.Count == 0 ? 0 : (Wins + 0.5 * Ties) / Rows.Count;

    public static HeadToHeadResult From(IReadOnlyList<HeadToHeadRow> rows, double tieThreshold, string judge) =>
        new(rows, rows.Count(r => r.Margin > tieThreshold), rows.Count(r => Math.Abs(r.Margin) <= tieThreshold),
            rows.Count(r => r.Margin < -tieThreshold), tieThreshold, judge);
}

/// <summary>Judges two checkpoints against each other: greedy answers from A and B for each prompt, each (prompt, answer)
/// scored on its own by a reward model (or the built-in arithmetic scorer), win/tie/loss by the score difference.
/// A scalar reward model sees one answer at a time, so the order in which A and B are shown cannot bias it: there is no
/// position to swap (a pairwise judge that reads both answers would need the swap). Runs on a dedicated thread, one
/// comparison at a time; models are loaded one after another and disposed as soon as their part is done.</summary>
public sealed class HeadToHead
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private const int BatchSize = 8;

    public bool Busy => _gate.CurrentCount == 0;

    public async Task<HeadToHeadResult> RunAsync(HeadToHeadRequest request, Action<double, string> progress, CancellationToken cancel)
    {
        if (request.Prompts.Count == 0) throw new ArgumentException("give at least one prompt");
        if (request.Judge is null)
        {
            var bad = request.Prompts.FirstOrDefault(p => !ArithmeticTask.TryParse(p, out _));
            if (bad is not null) throw new ArgumentException($"the built-in arithmetic scorer judges arithmetic questions only; \"{bad}\" is not one: pick a reward model");
        }
        if (!await _gate.WaitAsync(0, cancel)) throw new InvalidOperationException("another head-to-head comparison is running; wait for it to finish");
        try
        {
            return await Task.Factory.StartNew(() => Run(request, progress, cancel), CancellationToken.None,
                TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
        finally
        {
            _gate.Release();
        }
    }

    private static HeadToHeadResult Run(HeadToHeadRequest request, Action<double, string> progress, CancellationToken cancel)
    {
        var settings = new GenerationSettings { MaxNewTokens = request.MaxNewTokens, Temperature = 0 };
        progress(0, $"generating with {request.A.Label}");
        var answersA = Answers(request.A, request.Prompts, settings, f => progress(f * 0.4, $"generating with {request.A.Label}"), cancel);
        progress(0.4, $"generating with {request.B.Label}");
        var answersB = Answers(request.B, request.Prompts, settings, f => progress(0.4 + f * 0.4, $"generating with {request.B.Label}"), cancel);
        progress(0.8, "scoring");
        var rows = new List<HeadToHeadRow>();
        if (request.Judge is null)
        {
            for (int i = 0; i < request.Prompts.Count; i++)
                rows.Add(new HeadToHeadRow(request.Prompts[i], answersA[i], answersB[i],
                    ArithmeticScorer.Score(request.Prompts[i], answersA[i]), ArithmeticScorer.Score(request.Prompts[i], answersB[i])));
            progress(1, "done");
            return HeadToHeadResult.From(rows, request.TieThreshold, "built-in arithmetic scorer");
        }
        var (judge, tokenizer) = ModelSources.LoadScoreModel(request.Judge);
        using (judge)
        {
            judge.eval();
            var template = ModelSources.TemplateFor(request.Judge, tokenizer);
            for (int i = 0; i < request.Prompts.Count; i++)
            {
                cancel.ThrowIfCancellationRequested();
                var p = request.Prompts[i];
                rows.Add(new HeadToHeadRow(p, answersA[i], answersB[i],
                    ModelSources.Score(judge, tokenizer, template, p, answersA[i]), ModelSources.Score(judge, tokenizer, template, p, answersB[i])));
                progress(0.8 + 0.2 * (i + 1) / request.Prompts.Count, "scoring");
            }
        }
        return HeadToHeadResult.From(rows, request.TieThreshold, request.Judge.Label);
    }

    private static List<string> Answers(ResolvedModel source, IReadOnlyList<string> prompts, GenerationSettings settings,
        Action<double> progress, CancellationToken cancel)
    {
        var (model, tokenizer) = ModelSources.LoadLanguageModel(source);
        using (model)
        {
            model.eval();
            var template = ModelSources.TemplateFor(source, tokenizer);
            var answers = new List<string>();
            foreach (var chunk in prompts.Chunk(BatchSize))
            {
                answers.AddRange(TextGenerator.GenerateText(model, tokenizer, chunk, settings, template, cancel: cancel));
                progress((double)answers.Count / prompts.Count);
            }
            return answers;
        }
    }
}
