using RlhfStudio.Engine.Adapters;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using RlhfStudio.Engine.Tests.Models;
using RlhfStudio.Engine.Tests.Trainers;
using RlhfStudio.Engine.Tests.Training;
using RlhfStudio.Engine.Trainers.Dpo;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Tests.Dpo;

/// <summary>Log-probabilities and the reference, on the tiny model without running a job.</summary>
[Collection(SerialTrainingCollection.Name)]
public class DpoModelTests(TrainerWorkspace workspace) : IClassFixture<TrainerWorkspace>
{
    [Fact]
    public void A_sequence_log_prob_is_the_sum_over_completion_tokens_and_padding_does_not_change_it()
    {
        var spec = workspace.Dpo(precision: Precision.Fp32);
        var (setup, reference, pairs) = DpoTestKit.Build(spec);
        using var ownedSetup = setup;
        using var ownedReference = reference;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        setup.Model.eval();
        var shortest = pairs.MinBy(p => p.Chosen.Ids.Length)!;
        var longest = pairs.MaxBy(p => Math.Max(p.Chosen.Ids.Length, p.Rejected.Ids.Length))!;
        Assert.True(longest.Rejected.Ids.Length > shortest.Chosen.Ids.Length || longest.Chosen.Ids.Length > shortest.Chosen.Ids.Length);

        // By hand, from the unpadded chosen row: log_softmax at each position that predicts a completion token.
        var chosen = shortest.Chosen;
        var logits = setup.Model.Forward(torch.tensor(chosen.Ids.Select(i => (long)i).ToArray(), [1, chosen.Ids.Length]));
        var logProbs = F.log_softmax(logits[0].to(ScalarType.Float32), -1);
        double expected = 0;
        for (int t = 1; t < chosen.Ids.Length; t++)
            if (chosen.Completion[t]) expected += logProbs[t - 1, chosen.Ids[t]].item<float>();

        var alone = DpoBatch.Collate([shortest], setup.Tokenizer.PadId!.Value, setup.Device);
        var padded = DpoBatch.Collate([shortest, longest], setup.Tokenizer.PadId!.Value, setup.Device);
        Assert.True(padded.InputIds.shape[1] > chosen.Ids.Length);
        var aloneValues = alone.SequenceLogProbs(setup.Model).data<float>().ToArray();
        var paddedValues = padded.SequenceLogProbs(setup.Model).data<float>().ToArray();
        Assert.Equal(expected, aloneValues[0], 4);
        Assert.Equal(aloneValues[0], paddedValues[0], 4);   // chosen of the first pair
        Assert.Equal(aloneValues[1], paddedValues[2], 4);   // its rejected side sits after both chosen rows
        // A different pad id changes nothing either: pads are never attended to nor counted.
        var otherPad = DpoBatch.Collate([shortest, longest], 5, setup.Device).SequenceLogProbs(setup.Model).data<float>().ToArray();
        Assert.Equal(paddedValues, otherPad);
    }

    [Fact]
    public void With_lora_the_reference_is_the_policy_with_adapters_off_and_holds_no_weights_of_its_own()
    {
        var spec = workspace.Dpo(adapter: AdapterKind.Lora, precision: Precision.Fp32);
        var (setup, reference, pairs) = DpoTestKit.Build(spec);
        using var ownedSetup = setup;
        using var ownedReference = reference;
        Assert.True(reference.SharesPolicyWeights);
        Assert.Null(reference.Copy);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // Stand in for training: non-zero lora_B, so that the policy differs from its base.
        var gen = new Generator(5);
        foreach (var (name, p) in Lora.AdapterParameters(setup.Model).Where(p => p.Name.EndsWith("lora_B.weight", StringComparison.Ordinal)))
            p.copy_(torch.randn(p.shape, generator: gen) * 0.5);
        var batch = DpoBatch.Collate(pairs.Take(3).ToList(), setup.Tokenizer.PadId!.Value, setup.Device);
        setup.Model.eval();
        var policy = batch.SequenceLogProbs(setup.Model);
        var fromReference = reference.LogProbs(batch);
        using var baseModel = ModelLoader.Load(workspace.ModelFolder);
        baseModel.eval();
        var expected = batch.SequenceLogProbs(baseModel);
        Assert.True(TestModels.MaxDiff(policy, expected) > 1e-2, "the adapters should change the policy");
        Assert.True(TestModels.MaxDiff(fromReference, expected) < 1e-5, $"reference vs base: {TestModels.MaxDiff(fromReference, expected)}");
        // The adapters are back on afterwards.
        Assert.True(TestModels.MaxDiff(batch.SequenceLogProbs(setup.Model), policy) < 1e-6);
        // Without LoRA the reference is a separate frozen model.
        var (fullSetup, fullReference, _) = DpoTestKit.Build(workspace.Dpo());
        using (fullSetup)
        using (fullReference)
        {
            Assert.NotNull(fullReference.Copy);
            Assert.All(fullReference.Copy!.parameters(), p => Assert.False(p.requires_grad));
            // It holds its inference weights for its lifetime (made once, not cast again every step): its compute dtype is fixed.
            var other = fullReference.Copy.ComputeDType == ScalarType.BFloat16 ? (ScalarType?)null : ScalarType.BFloat16;
            Assert.Throws<InvalidOperationException>(() => fullReference.Copy.ComputeDType = other);
        }
    }

    [Fact]
    public void Precomputed_reference_log_probs_equal_the_on_the_fly_ones_and_survive_a_save()
    {
        using var dir = new TempDir();
        var spec = workspace.Dpo();
        var (setup, reference, pairs) = DpoTestKit.Build(spec);
        using var ownedSetup = setup;
        using var ownedReference = reference;
        var fingerprint = ReferenceLogProbs.FingerprintOf(pairs, [], "test");
        long pad = setup.Tokenizer.PadId!.Value;
        var cache = ReferenceLogProbs.Compute(reference, pairs, [], batchSize: 4, pad, setup.Device, fingerprint);
        using var scope = NewDisposeScope();
        // A batch in another order and size than the precomputation.
        int[] rows = [8, 2, 5];
        var batch = DpoBatch.Collate(rows.Select(r => pairs[r]).ToList(), pad, setup.Device);
        var (chosen, rejected) = batch.Split(reference.LogProbs(batch));
        for (int i = 0; i < rows.Length; i++)
        {
            Assert.Equal(cache.Train[rows[i]].Chosen, chosen[i].item<float>(), 4);
            Assert.Equal(cache.Train[rows[i]].Rejected, rejected[i].item<float>(), 4);
        }
        cache.Save(dir.Path);
        var loaded = ReferenceLogProbs.TryLoad(dir.Path, fingerprint, pairs.Count, 0, out _);
        Assert.NotNull(loaded);
        Assert.Equal(cache.Train, loaded!.Train);
        Assert.Null(ReferenceLogProbs.TryLoad(dir.Path, ReferenceLogProbs.FingerprintOf(pairs.Skip(1).ToList(), [], "test"), pairs.Count - 1, 0, out var why));
        Assert.Contains("other pairs", why);
    }
}
