namespace RlhfStudio.Cli;

/// <summary>One command: its words (e.g. "model inspect"), positional argument names, accepted options and flags,
/// a one-line summary, and the handler (which returns the exit code).</summary>
public sealed record CommandSpec(
    string Name,
    IReadOnlyList<string> Positionals,
    IReadOnlyList<string> Options,
    IReadOnlyList<string> Flags,
    string Summary,
    Func<Arguments, CliOutput, int> Run)
{
    public string Usage => string.Join(" ", new[] { Name }.Concat(Positionals).Concat(Options.Select(o => $"[--{o} X]")).Concat(Flags.Select(f => $"[--{f}]")));
}

/// <summary>Where a command writes: results to <see cref="Out"/>, diagnostics to <see cref="Error"/>.</summary>
public sealed record CliOutput(TextWriter Out, TextWriter Error);
