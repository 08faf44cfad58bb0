namespace RlhfStudio.Cli.Tests;

/// <summary>Runs the CLI's entry method in-process and captures what it writes.</summary>
internal sealed record CliRun(int ExitCode, string Out, string Error)
{
    public static CliRun Of(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, stdout, stderr);
        return new CliRun(code, stdout.ToString(), stderr.ToString());
    }
}

/// <summary>One "tiny" preset written by the CLI itself, shared by the tests of a class and deleted afterwards.</summary>
public sealed class PresetFolder : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "rlhf-cli-tests-" + Guid.NewGuid().ToString("N"));
    public string Model => Path.Combine(Root, "tiny");

    public PresetFolder()
    {
        var run = CliRun.Of("model", "create-preset", "tiny", Model, "--seed", "5");
        if (run.ExitCode != 0) throw new InvalidOperationException($"create-preset failed: {run.Error}");
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}
