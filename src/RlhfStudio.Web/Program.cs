using RlhfStudio.Web;

var builder = WebApplication.CreateBuilder(args);
builder.AddStudioServices();

var app = builder.Build();
await app.InitializeStudioAsync();
app.MapStudio();
app.Run();

/// <summary>Entry point; public so that functional tests can host it with WebApplicationFactory.</summary>
public partial class Program;
