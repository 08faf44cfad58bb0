namespace RlhfStudio.Web.Services;

/// <summary>Keeps user-given model and dataset paths inside the configured roots: the path is made
/// absolute, every symbolic link along it is resolved, and the result must lie under a root (whose
/// links are resolved too). "..", absolute paths elsewhere and links pointing out are refused.</summary>
public static class PathGuard
{
    /// <summary>The real path of <paramref name="path"/> when it lies under one of <paramref name="roots"/>;
    /// otherwise an <see cref="UnauthorizedAccessException"/> naming the roots.</summary>
    public static string EnsureUnder(string path, IReadOnlyList<string> roots, string what)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException($"{what} path is empty");
        if (path.Contains('\0')) throw new ArgumentException($"{what} path contains a NUL character");
        var real = RealPath(Path.GetFullPath(path));
        foreach (var root in roots)
        {
            var realRoot = RealPath(Path.GetFullPath(root)).TrimEnd(Path.DirectorySeparatorChar);
            if (real == realRoot || real.StartsWith(realRoot + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                return real;
        }
        throw new UnauthorizedAccessException(roots.Count == 0
            ? $"{what} paths are disabled: no {what} roots are configured"
            : $"{what} path \"{path}\" is outside the allowed folders ({string.Join(", ", roots)})");
    }

    /// <summary>Resolves symbolic links component by component (like realpath(3)); components that do not
    /// exist yet are kept as they are.</summary>
    public static string RealPath(string fullPath)
    {
        var root = Path.GetPathRoot(fullPath) ?? "/";
        var parts = fullPath[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        var current = root;
        for (int i = 0; i < parts.Length; i++)
        {
            var next = Path.Combine(current, parts[i]);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            int hops = 0;
            while (info.Exists && info.LinkTarget is not null)
            {
                if (++hops > 40) throw new IOException($"too many levels of symbolic links at {next}");
                var target = info.LinkTarget;
                next = Path.GetFullPath(Path.IsPathRooted(target) ? target : Path.Combine(Path.GetDirectoryName(next)!, target));
                next = RealPath(next);
                info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            }
            current = next;
        }
        return current;
    }
}
