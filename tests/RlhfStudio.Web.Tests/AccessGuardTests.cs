using System.Net;
using System.Net.Http.Headers;

namespace RlhfStudio.Web.Tests;

/// <summary>Bound beyond localhost, the studio requires its access token for pages, API and hub.
/// (The test only talks to 127.0.0.1; binding 0.0.0.0 is what makes the token required.)</summary>
public class AccessGuardTests
{
    [Fact]
    public async Task Beyond_localhost_every_surface_but_health_and_login_needs_the_token()
    {
        await using var studio = await StudioProcess.StartAsync(
            settings: new Dictionary<string, string> { ["Studio:AccessToken"] = "s3cret-token" }, bindHost: "0.0.0.0");
        using var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = studio.BaseAddress };

        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("api/runs")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.PostAsync("hubs/runs/negotiate?negotiateVersion=1", null)).StatusCode);
        var page = new HttpRequestMessage(HttpMethod.Get, "/");
        page.Headers.Accept.ParseAdd("text/html");
        var redirect = await http.SendAsync(page);
        Assert.Equal(HttpStatusCode.Redirect, redirect.StatusCode);
        Assert.Equal("/login", redirect.Headers.Location?.ToString());
        Assert.Contains("access token", await http.GetStringAsync("login"));

        var wrong = new HttpRequestMessage(HttpMethod.Get, "api/runs");
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "guess");
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.SendAsync(wrong)).StatusCode);

        var right = new HttpRequestMessage(HttpMethod.Get, "api/runs");
        right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "s3cret-token");
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(right)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("hubs/runs/negotiate?negotiateVersion=1&access_token=s3cret-token", null)).StatusCode);

        // the login form sets a cookie that opens the pages
        var login = await http.PostAsync("login", new FormUrlEncodedContent(new Dictionary<string, string> { ["token"] = "s3cret-token" }));
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        var cookie = login.Headers.GetValues("Set-Cookie").Single();
        Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
        var withCookie = new HttpRequestMessage(HttpMethod.Get, "/");
        withCookie.Headers.Add("Cookie", cookie.Split(';')[0]);
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(withCookie)).StatusCode);
    }

    [Fact]
    public async Task On_localhost_no_token_is_needed()
    {
        await using var studio = await StudioProcess.StartAsync();
        using var http = new HttpClient { BaseAddress = studio.BaseAddress };
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("api/runs")).StatusCode);
    }

    [Fact]
    public async Task Without_a_configured_token_one_is_generated_and_logged()
    {
        await using var studio = await StudioProcess.StartAsync(bindHost: "0.0.0.0");
        using var http = new HttpClient { BaseAddress = studio.BaseAddress };
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("api/runs")).StatusCode); // first request decides and logs
        var deadline = DateTime.UtcNow.AddSeconds(10);
        string? token = null;
        while (token is null && DateTime.UtcNow < deadline)
        {
            var match = System.Text.RegularExpressions.Regex.Match(studio.Output, @"/login\?token=([0-9a-f]{48})");
            if (match.Success) token = match.Groups[1].Value;
            else await Task.Delay(100);
        }
        Assert.NotNull(token);
        var request = new HttpRequestMessage(HttpMethod.Get, "api/runs");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(request)).StatusCode);
    }
}
