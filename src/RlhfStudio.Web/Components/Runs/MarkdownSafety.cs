using Markdig;
using Markdig.Syntax;
using Markdig.Syntax.Inlines;

namespace RlhfStudio.Web.Components.Runs;

/// <summary>Untrusted Markdown (model generations, dataset rows) to HTML that cannot run script:
/// raw HTML is escaped (DisableHtml), link targets other than http, https, mailto and relative paths
/// are removed, and images are turned into plain links so that a sample cannot make the browser
/// fetch from another host.</summary>
public static class MarkdownSafety
{
    private static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder()
        .DisableHtml()
        .UsePipeTables()
        .UseEmphasisExtras()
        .UseSoftlineBreakAsHardlineBreak()
        .Build();

    public static string ToHtml(string? markdown)
    {
        if (string.IsNullOrEmpty(markdown)) return "";
        var document = Markdown.Parse(markdown, Pipeline);
        foreach (var link in document.Descendants<LinkInline>())
        {
            if (!IsSafeUrl(link.Url)) link.Url = "";
            if (link.IsImage)
            {
                link.IsImage = false; // show as a link to the image, never load it
            }
        }
        foreach (var auto in document.Descendants<AutolinkInline>())
            if (!IsSafeUrl(auto.Url)) auto.Url = "";
        return document.ToHtml(Pipeline);
    }

    public static bool IsSafeUrl(string? url)
    {
        if (string.IsNullOrWhiteSpace(url)) return false;
        var trimmed = url.Trim();
        if (trimmed.StartsWith('/') || trimmed.StartsWith('#')) return !trimmed.StartsWith("//");
        return Uri.TryCreate(trimmed, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" or "mailto";
    }
}
