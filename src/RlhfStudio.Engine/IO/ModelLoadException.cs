namespace RlhfStudio.Engine.IO;

/// <summary>A model folder or weights file could not be loaded. The message names the file and, where
/// it applies, the tensor, in words a user can act on.</summary>
public sealed class ModelLoadException : Exception
{
    public ModelLoadException(string message) : base(message) { }
    public ModelLoadException(string message, Exception inner) : base(message, inner) { }

    /// <summary>The file the problem is in, when there is one.</summary>
    public string? FilePath { get; init; }
    /// <summary>The tensor the problem is about, when there is one.</summary>
    public string? TensorName { get; init; }

    internal static ModelLoadException InFile(string path, string problem, string? tensor = null, Exception? inner = null)
    {
        var message = tensor is null ? $"{path}: {problem}" : $"{path}: tensor \"{tensor}\": {problem}";
        return inner is null
            ? new ModelLoadException(message) { FilePath = path, TensorName = tensor }
            : new ModelLoadException(message, inner) { FilePath = path, TensorName = tensor };
    }
}
