using RlhfStudio.Engine.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Cli.Commands;

internal static class CommandHelpers
{
    /// <summary>--dtype: fp32 (default) or bf16. fp16 is refused: it is unusably slow on CPUs.</summary>
    public static ScalarType DType(Arguments args) => args.String("dtype") switch
    {
        null or "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        var other => throw new UsageException($"--dtype must be fp32 or bf16, got \"{other}\""),
    };

    /// <summary>--threads N: intra-op threads for libtorch. On a machine shared with other work, fewer threads than
    /// cores avoids OpenMP threads spin-waiting for each other (measured on a loaded 2-core machine: SFT of the tiny
    /// preset at 247 tokens/s with 2 threads, 1,400-1,700 with 1).</summary>
    public static void Threads(Arguments args)
    {
        int threads = args.Int("threads", 0, min: 0);
        if (threads > 0) torch.set_num_threads(threads);
    }

    /// <summary>A model folder given on the command line, with the loader's own checks (pickle refusal, config).</summary>
    public static string ModelFolder(string path)
    {
        if (File.Exists(path)) CheckpointFiles.RefusePickle(path);
        if (File.Exists(path)) throw new ModelLoadException($"{path}: is a file; give the model folder (with config.json and safetensors weights)");
        if (!Directory.Exists(path)) throw new ModelLoadException($"{path}: model folder not found");
        return path;
    }
}
