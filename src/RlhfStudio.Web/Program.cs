using RlhfStudio.Web;

// Before any torch call: libgomp reads its spin count when libtorch loads.
RlhfStudio.Engine.Runtime.NativeSettings.Apply();
var builder = WebApplication.CreateBuilder(args);
builder.AddStudioServices();

var app = builder.Build();
await app.InitializeStudioAsync();
app.MapStudio();
app.Run();

/// <summary>Entry point; public so that functional tests can host it with WebApplicationFactory.</summary>
public partial class Program;
