using RlhfStudio.Cli;

// Before any torch call: libgomp reads its spin count when libtorch loads.
RlhfStudio.Engine.Runtime.NativeSettings.Apply();
return CliApp.Run(args, Console.Out, Console.Error);
