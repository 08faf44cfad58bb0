using RlhfStudio.Cli.Commands;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Trainers;

namespace RlhfStudio.Cli;

/// <summary>The <c>rlhfstudio</c> command line. Exit codes: 0 success, 1 the work failed (bad model folder, bad
/// input...), 2 the command was called wrongly. Errors are one clear line on stderr, never a stack trace.</summary>
public static class CliApp
{
    /// <summary>Every command. New ones (e.g. "train sft --config run.json") are one entry here plus a handler.</summary>
    public static IReadOnlyList<CommandSpec> Commands { get; } =
    [
        ModelCommands.Inspect,
        ModelCommands.Logits,
        ModelCommands.CreatePreset,
        GenerateCommand.Spec,
        TrainCommand.Sft,
        TrainCommand.Reward,
        TrainCommand.Ppo,
        TrainCommand.Rloo,
        TrainCommand.Dpo,
        EvalCommands.Arithmetic,
        EvalCommands.Reward,
        EvalCommands.Kl,
    ];

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var output = new CliOutput(stdout, stderr);
        if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
        {
            PrintHelp(args.Length == 0 ? stderr : stdout);
            return args.Length == 0 ? 2 : 0;
        }
        // The longest command name that the arguments start with ("model inspect" before a hypothetical "model").
        var command = Commands
            .Where(c => c.Name.Split(' ') is var words && words.Length <= args.Length && words.SequenceEqual(args.Take(words.Length)))
            .MaxBy(c => c.Name.Length);
        bool help = args.Any(a => a is "--help" or "-h");
        if (command is null)
        {
            // "train --help": the commands of that group.
            var group = Commands.Where(c => c.Name.Split(' ')[0] == args[0]).ToList();
            if (help && group.Count > 0)
            {
                PrintHelp(stdout, group);
                return 0;
            }
            stderr.WriteLine($"error: unknown command \"{string.Join(" ", args.TakeWhile(a => !a.StartsWith('-')).Take(2))}\"");
            PrintHelp(stderr);
            return 2;
        }
        if (help)
        {
            PrintHelp(stdout, [command]);
            return 0;
        }
        try
        {
            var arguments = new Arguments(args.Skip(command.Name.Split(' ').Length), command);
            return command.Run(arguments, output);
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            stderr.WriteLine($"usage: rlhfstudio {command.Usage}");
            return 2;
        }
        catch (Exception e) when (JobFailures.Describe(e) is string message)
        {
            stderr.WriteLine($"error: {message}");
            return 1;
        }
        catch (Exception e) when (e is ModelLoadException or TokenizerLoadException or ArgumentException or IOException
                                   or UnauthorizedAccessException or NotSupportedException or InvalidOperationException or FormatException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Exception e)
        {
            // Unexpected: still one line, with the exception type to help a bug report.
            stderr.WriteLine($"error: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }

    private static void PrintHelp(TextWriter w, IReadOnlyList<CommandSpec>? commands = null)
    {
        w.WriteLine("usage: rlhfstudio COMMAND ...");
        w.WriteLine();
        foreach (var c in commands ?? Commands)
        {
            w.WriteLine($"  {c.Usage}");
            w.WriteLine($"      {c.Summary}");
        }
    }
}
