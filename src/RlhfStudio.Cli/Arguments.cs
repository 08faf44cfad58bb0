using System.Globalization;

namespace RlhfStudio.Cli;

/// <summary>A mistake in how a command was called (exit code 2); the message says what to change.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>The words after the command name: positional values and <c>--name value</c> options (or <c>--name=value</c>;
/// declared flags take no value). Typed getters fail with a message naming the option.</summary>
public sealed class Arguments
{
    private readonly List<string> _positional = [];
    private readonly Dictionary<string, string> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _flags = new(StringComparer.Ordinal);

    public Arguments(IEnumerable<string> words, CommandSpec spec)
    {
        var list = words.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var word = list[i];
            if (!word.StartsWith("--", StringComparison.Ordinal) || word == "--")
            {
                _positional.Add(word);
                continue;
            }
            var name = word[2..];
            string? inline = null;
            if (name.IndexOf('=') is var eq && eq > 0) (name, inline) = (name[..eq], name[(eq + 1)..]);
            if (spec.Flags.Contains(name))
            {
                if (inline is not null) throw new UsageException($"--{name} is a flag and takes no value");
                _flags.Add(name);
            }
            else if (spec.Options.Contains(name))
            {
                if (inline is null && (i + 1 >= list.Count || list[i + 1].StartsWith("--", StringComparison.Ordinal) && list[i + 1].Length > 2))
                    throw new UsageException($"--{name} needs a value");
                _options[name] = inline ?? list[++i];
            }
            else
                throw new UsageException($"unknown option --{name} for \"{spec.Name}\"" +
                    (spec.Options.Count + spec.Flags.Count > 0 ? $" (options: {string.Join(", ", spec.Options.Concat(spec.Flags).Select(o => "--" + o))})" : ""));
        }
        if (_positional.Count != spec.Positionals.Count)
            throw new UsageException($"\"{spec.Name}\" takes {spec.Positionals.Count} argument(s) ({string.Join(" ", spec.Positionals)}), got {_positional.Count}");
    }

    public string Positional(int index) => _positional[index];

    public bool Flag(string name) => _flags.Contains(name);

    public string? String(string name) => _options.GetValueOrDefault(name);

    public int Int(string name, int fallback, int min = int.MinValue)
    {
        if (String(name) is not { } s) return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < min)
            throw new UsageException($"--{name} must be an integer{(min > int.MinValue ? $" >= {min}" : "")}, got \"{s}\"");
        return v;
    }

    public long Long(string name, long fallback)
    {
        if (String(name) is not { } s) return fallback;
        if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
            throw new UsageException($"--{name} must be an integer, got \"{s}\"");
        return v;
    }

    public double Double(string name, double fallback)
    {
        if (String(name) is not { } s) return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new UsageException($"--{name} must be a number, got \"{s}\"");
        return v;
    }
}
