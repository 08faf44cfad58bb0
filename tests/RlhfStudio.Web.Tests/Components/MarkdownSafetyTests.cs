using Bunit;
using RlhfStudio.Web.Components.Runs;

namespace RlhfStudio.Web.Tests.Components;

public class MarkdownSafetyTests : BunitContext
{
    [Fact]
    public void Script_tags_and_raw_html_are_shown_as_text()
    {
        var html = MarkdownSafety.ToHtml("hello <script>alert(1)</script> <img src=x onerror=alert(2)>");
        Assert.DoesNotContain("<script", html);
        Assert.DoesNotContain("<img", html);
        Assert.Contains("&lt;script&gt;", html);
    }

    [Theory]
    [InlineData("[click](javascript:alert(1))")]
    [InlineData("[click](JavaScript:alert(1))")]
    [InlineData("[click](data:text/html;base64,PHNjcmlwdD4=)")]
    [InlineData("[click](vbscript:msgbox)")]
    [InlineData("<javascript:alert(1)>")]
    public void Unsafe_link_targets_are_removed(string markdown)
    {
        var html = MarkdownSafety.ToHtml(markdown);
        var hrefs = System.Text.RegularExpressions.Regex.Matches(html, "href=\"([^\"]*)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.All(hrefs, h => Assert.Equal("", h));
    }

    [Fact]
    public void Safe_links_stay_and_images_become_links_that_load_nothing()
    {
        Assert.Contains("href=\"https://example.org/a\"", MarkdownSafety.ToHtml("[a](https://example.org/a)"));
        var image = MarkdownSafety.ToHtml("![tracker](https://evil.example/pixel.png)");
        Assert.DoesNotContain("<img", image);
        Assert.Contains("href=\"https://evil.example/pixel.png\"", image);
    }

    [Fact]
    public void Code_blocks_are_kept_with_their_content_escaped()
    {
        var html = MarkdownSafety.ToHtml("```python\nif a < b:\n    print('<b>')\n```");
        Assert.Contains("<pre><code class=\"language-python\">", html);
        Assert.Contains("if a &lt; b:", html);
        Assert.Contains("&lt;b&gt;", html);
    }

    [Fact]
    public void The_component_renders_the_sanitised_html()
    {
        var cut = Render<SafeMarkdown>(p => p.Add(c => c.Text, "**bold** <script>x()</script> [x](javascript:y())"));
        Assert.Single(cut.FindAll("strong"));
        Assert.Empty(cut.FindAll("script"));
        Assert.All(cut.FindAll("a"), a => Assert.DoesNotContain("javascript", a.GetAttribute("href") ?? ""));
    }
}
