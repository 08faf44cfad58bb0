using RlhfStudio.Engine.Text;

namespace RlhfStudio.Engine.Generation;

/// <summary>The host-side record of a generation: each row's tokens, whether it is still running, why it stopped,
/// and stop-string matching (which needs decoded text, so it cannot run on the device).</summary>
internal sealed class StepBookkeeping
{
    private readonly HashSet<long> _eos;
    private readonly HashSet<long> _stopTokens;
    private readonly IReadOnlyList<string> _stopStrings;
    private readonly TextTokenizer? _tokenizer;
    private readonly List<long>[] _tokens;
    private readonly FinishReason?[] _reasons;
    private readonly int[] _decodedLength;
    private readonly bool[] _active;
    private int _running;

    public StepBookkeeping(long batch, IReadOnlyList<long> eosIds, GenerationSettings settings, TextTokenizer? tokenizer)
    {
        _eos = [.. eosIds];
        _stopTokens = [.. settings.StopTokenIds];
        _stopStrings = settings.StopStrings;
        _tokenizer = tokenizer;
        _tokens = Enumerable.Range(0, (int)batch).Select(_ => new List<long>()).ToArray();
        _reasons = new FinishReason?[batch];
        _decodedLength = new int[batch];
        _active = Enumerable.Repeat(true, (int)batch).ToArray();
        _running = (int)batch;
    }

    public bool AllFinished => _running == 0;
    public IReadOnlyList<IReadOnlyList<long>> Tokens => _tokens;
    /// <summary>Rows still running at the end were cut by max_new_tokens.</summary>
    public IReadOnlyList<FinishReason> Reasons => _reasons.Select(r => r ?? FinishReason.Length).ToArray();
    public long[] Lengths => _tokens.Select(t => (long)t.Count).ToArray();

    /// <summary>Which rows were running when the last recorded step began (their tokens are real).</summary>
    public IReadOnlyList<bool> LastStepActive { get; private set; } = [];

    /// <summary>Takes the tokens of one step; returns the rows that a stop string ended (the device must mark them).</summary>
    public List<long> Record(int step, long[] tokens)
    {
        LastStepActive = (bool[])_active.Clone();
        var stringStops = new List<long>();
        for (int r = 0; r < tokens.Length; r++)
        {
            if (!_active[r]) continue;
            long token = tokens[r];
            _tokens[r].Add(token);
            FinishReason? reason = _eos.Contains(token) ? FinishReason.Eos
                : _stopTokens.Contains(token) ? FinishReason.StopToken
                : EndsWithStopString(r) ? FinishReason.StopString
                : null;
            if (reason is null) continue;
            _reasons[r] = reason;
            _active[r] = false;
            _running--;
            if (reason == FinishReason.StopString) stringStops.Add(r);
        }
        return stringStops;
    }

    /// <summary>True when a stop string occurs in the response text and overlaps the text the newest token added
    /// (a token may complete a stop string and carry more text after it).</summary>
    private bool EndsWithStopString(int row)
    {
        if (_stopStrings.Count == 0 || _tokenizer is null) return false;
        var text = _tokenizer.Decode(_tokens[row].Select(t => (int)t), skipSpecialTokens: false);
        int previous = _decodedLength[row];
        _decodedLength[row] = text.Length;
        foreach (var stop in _stopStrings)
        {
            int from = Math.Max(0, Math.Min(previous, text.Length) - stop.Length + 1);
            if (text.IndexOf(stop, from, StringComparison.Ordinal) >= 0) return true;
        }
        return false;
    }
}
