// A model being trained, with everything that goes with it, and how its trained part is saved:
//
//   checkpoint (SaveCheckpoint/LoadCheckpoint)   exactly what trains, restored in place (the optimiser holds the
//                                                parameter objects): full/freeze -> the HF weights in fp32;
//                                                LoRA -> the PEFT adapter folder (lora_A/lora_B + modules_to_save,
//                                                e.g. a reward model's score head). Plus tokenizer and rlhfstudio.json,
//                                                so a full checkpoint folder loads as a model.
//   final (SaveFinal)                            an HF folder (LoRA merged into the weights) + tokenizer files +
//                                                rlhfstudio.json; for LoRA also the adapter in final/adapter/.
using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Text;
using RlhfStudio.Engine.Training;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers;

public sealed class TrainableModel<TModel> : IDisposable where TModel : TransformerModel
{
    public const string AdapterFolderName = "adapter";

    internal TrainableModel(TModel model, TextTokenizer tokenizer, PromptTemplate template, Device device, AdapterKind adapter, string baseModel)
    {
        Model = model;
        Tokenizer = tokenizer;
        Template = template;
        Device = device;
        Adapter = adapter;
        BaseModel = baseModel;
        Parameters = ParameterGroups.Trainable(model);
    }

    public TModel Model { get; }
    public TextTokenizer Tokenizer { get; }
    public PromptTemplate Template { get; }
    public Device Device { get; }
    public AdapterKind Adapter { get; }
    /// <summary>Where training started from ("preset:tiny" or a folder).</summary>
    public string BaseModel { get; }
    /// <summary>The parameters that train (requires_grad), sorted by name: what the optimiser gets.</summary>
    public IReadOnlyList<NamedParameter> Parameters { get; }

    public ModelRecord Record(TrainingMethod method) =>
        new() { Template = Template.Name, Method = method, BaseModel = BaseModel, Adapter = Adapter };

    /// <summary>Writes the trained part into a checkpoint folder (see the file comment).</summary>
    public void SaveCheckpoint(string folder, TrainingMethod method)
    {
        if (Adapter == AdapterKind.Lora) Lora.Save(Model, folder);
        else ModelSaver.Save(Model, folder, ScalarType.Float32);
        Tokenizer.Save(folder);
        Record(method).Write(folder);
    }

    /// <summary>Restores what <see cref="SaveCheckpoint"/> wrote into this (freshly set up) model, in place.</summary>
    public void LoadCheckpoint(string folder)
    {
        if (Adapter != AdapterKind.Lora)
        {
            ModelLoader.LoadWeights(Model, folder);
            return;
        }
        // Lora.Load would attach new adapter parameters; the optimiser already holds these ones, so read into them.
        var path = Path.Combine(folder, Lora.WeightsFileName);
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: not found (the checkpoint has no LoRA adapter; was it made with adapter kind lora?)") { FilePath = path };
        using var file = SafeTensorsFile.Open(path);
        file.ReadExactlyInto(Parameters.ToDictionary(p => Lora.KeyPrefix + p.Name, p => (Tensor)p.Parameter, StringComparer.Ordinal),
            "is not trained by this run (a different adapter config?)");
    }

    /// <summary>Writes the final model into <paramref name="folder"/> (see the file comment) and returns it.</summary>
    public string SaveFinal(string folder, TrainingMethod method)
    {
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);   // a re-run replaces an older final model
        if (Adapter == AdapterKind.Lora)
        {
            Lora.SaveMerged(Model, folder, ScalarType.Float32);
            Lora.Save(Model, Path.Combine(folder, AdapterFolderName));
        }
        else ModelSaver.Save(Model, folder, ScalarType.Float32);
        Tokenizer.Save(folder);
        Record(method).Write(folder);
        return folder;
    }

    public void Dispose() => Model.Dispose();
}
