using System.Text.Json;

namespace RlhfStudio.Web.Components;

/// <summary>Turns spec JSON into "path = value" pairs and finds the settings in which runs differ.</summary>
public static class SpecFlattener
{
    public static Dictionary<string, string> Flatten(string json)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        using var doc = JsonDocument.Parse(json);
        Walk(doc.RootElement, "", result);
        return result;
    }

    /// <summary>Rows (setting, value per run) for every setting whose value is not the same in all runs.</summary>
    public static List<KeyValuePair<string, string[]>> Differences(IReadOnlyList<Dictionary<string, string>> specs)
    {
        var keys = specs.SelectMany(s => s.Keys).Distinct().Order(StringComparer.Ordinal);
        var rows = new List<KeyValuePair<string, string[]>>();
        foreach (var key in keys)
        {
            var values = specs.Select(s => s.TryGetValue(key, out var v) ? v : "—").ToArray();
            if (values.Distinct().Count() > 1) rows.Add(new(key, values));
        }
        return rows;
    }

    private static void Walk(JsonElement e, string path, Dictionary<string, string> into)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject()) Walk(p.Value, path.Length == 0 ? p.Name : $"{path}.{p.Name}", into);
                break;
            case JsonValueKind.Array:
                into[path] = string.Join(", ", e.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString() : x.GetRawText()));
                break;
            case JsonValueKind.String:
                into[path] = e.GetString() ?? "";
                break;
            default:
                into[path] = e.GetRawText();
                break;
        }
    }
}
