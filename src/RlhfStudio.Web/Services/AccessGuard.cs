using System.Net;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Options;

namespace RlhfStudio.Web.Services;

/// <summary>The studio is bound to localhost by default and then needs no login. When it listens on any
/// other address, every page, API call and hub connection must carry the access token (configured as
/// Studio:AccessToken, or generated at start-up and printed to the log): as a bearer header, an
/// <c>access_token</c> query parameter (SignalR WebSockets), or the cookie set by <c>/login?token=…</c>.</summary>
public sealed class AccessGuard(IServer server, IOptions<StudioOptions> options, ILogger<AccessGuard> logger)
{
    public const string CookieName = "rlhfstudio_token";
    private readonly Lock _lock = new();
    private bool? _required;
    private string? _token;

    /// <summary>True when the server listens on a non-loopback address.</summary>
    public bool Required
    {
        get
        {
            lock (_lock)
            {
                if (_required is bool known) return known;
                var addresses = server.Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
                if (addresses.Count == 0) return false; // not listening yet (or an in-memory test server)
                _required = addresses.Any(a => !IsLoopback(a));
                if (_required.Value)
                {
                    _token = string.IsNullOrWhiteSpace(options.Value.AccessToken) ? NewToken() : options.Value.AccessToken;
                    if (string.IsNullOrWhiteSpace(options.Value.AccessToken))
                        logger.LogWarning("The studio listens beyond localhost ({Addresses}); open it with /login?token={Token}",
                            string.Join(", ", addresses), _token);
                    else
                        logger.LogInformation("The studio listens beyond localhost ({Addresses}); the configured access token is required",
                            string.Join(", ", addresses));
                }
                return _required.Value;
            }
        }
    }

    public bool IsValid(string? token)
    {
        if (!Required) return true;
        if (string.IsNullOrEmpty(token) || _token is null) return false;
        return CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(token), System.Text.Encoding.UTF8.GetBytes(_token));
    }

    private static string NewToken() => Convert.ToHexString(RandomNumberGenerator.GetBytes(24)).ToLowerInvariant();

    private static bool IsLoopback(string address)
    {
        if (!Uri.TryCreate(address.Replace("://+", "://0.0.0.0").Replace("://*", "://0.0.0.0"), UriKind.Absolute, out var uri)) return false;
        if (uri.Host == "localhost") return true;
        return IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip);
    }
}

/// <summary>Enforces <see cref="AccessGuard"/> on every request but the health check and the login page.</summary>
public sealed class AccessGuardMiddleware(RequestDelegate next, AccessGuard guard)
{
    public async Task InvokeAsync(HttpContext context)
    {
        var path = context.Request.Path;
        if (!guard.Required || path.StartsWithSegments("/healthz") || path.StartsWithSegments("/login"))
        {
            await next(context);
            return;
        }
        string? token = null;
        var header = context.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) token = header[7..].Trim();
        token ??= context.Request.Query["access_token"].FirstOrDefault();
        token ??= context.Request.Cookies[AccessGuard.CookieName];
        if (guard.IsValid(token))
        {
            await next(context);
            return;
        }
        bool wantsPage = HttpMethods.IsGet(context.Request.Method) && context.Request.Headers.Accept.ToString().Contains("text/html");
        if (wantsPage)
        {
            context.Response.Redirect("/login");
            return;
        }
        context.Response.StatusCode = StatusCodes.Status401Unauthorized;
        await context.Response.WriteAsJsonAsync(new { title = "An access token is required: the studio listens beyond localhost.", status = 401 });
    }
}

/// <summary>The login page: a form for the token, which is checked and kept in an HTTP-only cookie.</summary>
public static class LoginEndpoints
{
    public static IEndpointRouteBuilder MapLogin(this IEndpointRouteBuilder app)
    {
        app.MapGet("/login", (HttpContext http, AccessGuard guard, string? token) =>
        {
            if (token is not null) return SignIn(http, guard, token);
            return Results.Content(Page(null), "text/html");
        }).ExcludeFromDescription();
        app.MapPost("/login", async (HttpContext http, AccessGuard guard) =>
        {
            var form = await http.Request.ReadFormAsync();
            return SignIn(http, guard, form["token"].ToString());
        }).ExcludeFromDescription().DisableAntiforgery();
        return app;
    }

    private static IResult SignIn(HttpContext http, AccessGuard guard, string token)
    {
        if (!guard.IsValid(token)) return Results.Content(Page("That token is not valid."), "text/html", statusCode: 401);
        http.Response.Cookies.Append(AccessGuard.CookieName, token,
            new CookieOptions { HttpOnly = true, SameSite = SameSiteMode.Strict, Secure = http.Request.IsHttps, MaxAge = TimeSpan.FromDays(30) });
        return Results.Redirect("/");
    }

    private static string Page(string? error) => $$"""
        <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Sign in · RlhfStudio</title>
        <style>body{font-family:system-ui,sans-serif;background:#f5f5f5;display:flex;justify-content:center;padding-top:12vh}
        form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002;min-width:min(360px,90vw)}
        input{width:100%;padding:.6rem;margin:.8rem 0;box-sizing:border-box}button{padding:.6rem 1.2rem;background:#3949ab;color:#fff;border:0;border-radius:4px}
        .error{color:#c62828}</style></head>
        <body><form method="post" action="/login"><h2>RlhfStudio</h2>
        <p>This studio listens beyond localhost. Enter its access token (printed in its log at start-up, or set as <code>Studio:AccessToken</code>).</p>
        {{(error is null ? "" : $"<p class=\"error\">{System.Net.WebUtility.HtmlEncode(error)}</p>")}}
        <input name="token" type="password" autocomplete="current-password" autofocus placeholder="access token">
        <button type="submit">Sign in</button></form></body></html>
        """;
}
