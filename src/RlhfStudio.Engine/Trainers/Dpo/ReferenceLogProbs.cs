// Precomputed reference log-probabilities (TRL precompute_ref_log_probs): one pass of the reference over the training
// and evaluation pairs before training, then the reference can be freed. The values are saved in every checkpoint
// (dpo_reference_logps.safetensors, a few bytes per pair) and read back on resume, so a resumed run neither recomputes
// them nor needs the reference's forward passes again. A fingerprint of the tokenised pairs and of the reference
// guards against resuming with other data or another reference; on a mismatch they are recomputed (they are
// deterministic: the reference runs in eval mode).
using RlhfStudio.Engine.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Dpo;

public sealed class ReferenceLogProbs
{
    public const string FileName = "dpo_reference_logps.safetensors";
    private const string FingerprintKey = "fingerprint";

    private ReferenceLogProbs(IReadOnlyList<(float, float)> train, IReadOnlyList<(float, float)> eval, string fingerprint)
    {
        Train = train;
        Eval = eval;
        Fingerprint = fingerprint;
    }

    /// <summary>(chosen, rejected) summed log-probabilities per training pair, in dataset order.</summary>
    public IReadOnlyList<(float Chosen, float Rejected)> Train { get; }
    public IReadOnlyList<(float Chosen, float Rejected)> Eval { get; }
    public string Fingerprint { get; }

    /// <summary>Runs the reference over every pair, <paramref name="batchSize"/> pairs per forward; <paramref name="progress"/>
    /// gets (pairs done, total).</summary>
    public static ReferenceLogProbs Compute(DpoReference reference, IReadOnlyList<DpoPair> train, IReadOnlyList<DpoPair> eval, int batchSize,
        long padId, Device device, string fingerprint, Action<long, long>? progress = null, CancellationToken cancel = default)
    {
        long total = train.Count + eval.Count, done = 0;
        var trainValues = Run(train);
        var evalValues = Run(eval);
        return new ReferenceLogProbs(trainValues, evalValues, fingerprint);

        List<(float, float)> Run(IReadOnlyList<DpoPair> pairs)
        {
            var values = new List<(float, float)>(pairs.Count);
            for (int start = 0; start < pairs.Count; start += batchSize)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var batch = DpoBatch.Collate(pairs.Skip(start).Take(batchSize).ToList(), padId, device);
                var (chosen, rejected) = batch.Split(reference.LogProbs(batch));
                var c = chosen.cpu().data<float>().ToArray();
                var r = rejected.cpu().data<float>().ToArray();
                for (int i = 0; i < c.Length; i++) values.Add((c[i], r[i]));
                done += batch.Pairs;
                progress?.Invoke(done, total);
                GC.Collect(0);   // Scalars (see notes/torchsharp.md)
            }
            return values;
        }
    }

    public void Save(string folder)
    {
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal)
        {
            ["train.chosen"] = torch.tensor(Train.Select(v => v.Chosen).ToArray()),
            ["train.rejected"] = torch.tensor(Train.Select(v => v.Rejected).ToArray()),
            ["eval.chosen"] = torch.tensor(Eval.Select(v => v.Chosen).ToArray()),
            ["eval.rejected"] = torch.tensor(Eval.Select(v => v.Rejected).ToArray()),
        };
        SafeTensorsWriter.Write(Path.Combine(folder, FileName), tensors, metadata: new Dictionary<string, string> { [FingerprintKey] = Fingerprint });
    }

    /// <summary>The values saved in <paramref name="folder"/> when they were made for these pairs and this reference
    /// (same <paramref name="fingerprint"/>), else null with the reason in <paramref name="why"/>.</summary>
    public static ReferenceLogProbs? TryLoad(string folder, string fingerprint, int trainPairs, int evalPairs, out string why)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
        {
            why = $"{Path.GetFileName(folder)} has no {FileName} (it was made without precomputeReferenceLogProbs)";
            return null;
        }
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue(FingerprintKey, out var saved) || saved != fingerprint)
        {
            why = $"{path} was computed for other pairs or another reference";
            return null;
        }
        var train = Read(file, "train", trainPairs);
        var eval = Read(file, "eval", evalPairs);
        why = "";
        return new ReferenceLogProbs(train, eval, fingerprint);
    }

    /// <summary>A fingerprint of the tokenised pairs (ids and completion marks, in order) and the reference's description.</summary>
    public static string FingerprintOf(IReadOnlyList<DpoPair> train, IReadOnlyList<DpoPair> eval, string reference)
    {
        ulong h = 0xCBF29CE484222325;
        void Add(long v) => h = (h ^ (ulong)v) * 0x100000001B3;
        foreach (var set in new[] { train, eval })
        {
            Add(set.Count);
            foreach (var pair in set)
                foreach (var side in new[] { pair.Chosen, pair.Rejected })
                {
                    Add(side.Ids.Length);
                    for (int i = 0; i < side.Ids.Length; i++) Add(side.Ids[i] * 2L + (side.Completion[i] ? 1 : 0));
                }
        }
        foreach (var c in reference) Add(c);
        return h.ToString("x16");
    }

    private static List<(float, float)> Read(SafeTensorsFile file, string part, int count)
    {
        using var chosen = file.Read($"{part}.chosen", ScalarType.Float32);
        using var rejected = file.Read($"{part}.rejected", ScalarType.Float32);
        if (chosen.shape[0] != count || rejected.shape[0] != count)
            throw ModelLoadException.InFile(file.Path, $"has {chosen.shape[0]} values, {count} pairs expected", $"{part}.chosen");
        var c = chosen.data<float>().ToArray();
        var r = rejected.data<float>().ToArray();
        return c.Zip(r).ToList();
    }
}
