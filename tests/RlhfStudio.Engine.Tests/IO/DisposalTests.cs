using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Tests.IO;

public class DisposalTests
{
    private static long Live => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    [Fact]
    public void Disposing_a_model_frees_every_tensor_it_made()
    {
        long before = Live;
        var model = new CausalLanguageModel(TestModels.Llama());
        var weight = model.state_dict()["model.norm.weight"];
        Assert.True(Live > before);
        model.Dispose();
        Assert.True(weight.IsInvalid);
        Assert.Equal(before, Live);
    }

    [Fact]
    public void A_failed_load_disposes_the_half_loaded_model()
    {
        using var dir = new TempDir();
        using (var scope = NewDisposeScope())
        {
            using var model = TestModels.RandomCausal(TestModels.Llama());
            ModelSaver.Save(model, dir.Path);
            // Tensors load in name order and model.norm.weight sorts after every layer: make it the wrong shape, so
            // the failure comes after most weights were read into the new model.
            SafeTensorsWriter.Write(dir["model.safetensors"], model.state_dict()
                .Select(kv => kv.Key == "model.norm.weight" ? new KeyValuePair<string, Tensor>(kv.Key, torch.ones(5)) : kv));
        }
        long before = Live;
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir.Path));
        Assert.Contains("model.norm.weight", e.Message);
        Assert.Equal(before, Live);
    }
}
