using System.Text.Json;
using System.Text.Json.Serialization;
using RlhfStudio.Engine.IO;
using RlhfStudio.Engine.Jobs;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Training;

/// <summary>AdamW with decoupled weight decay, numerically PyTorch's single-tensor <c>torch.optim.AdamW</c>
/// (Loshchilov &amp; Hutter 2019): <c>p -= lr*wd*p; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g^2;
/// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)</c>. Weight decay applies only to the parameters
/// <see cref="ParameterGroups.IsDecayed"/> picks (transformers' groups).
///
/// Why not TorchSharp's AdamW: it allocates Scalars it never disposes (memory grows unless the GC runs every step),
/// keeps its state in the parameter's dtype (bf16 moments stall training) and saves state by parameter index. Here
/// every Scalar is disposed, moments are fp32 whatever the parameter dtype (a bf16 parameter is updated in fp32 and
/// rounded once), and state is saved by parameter name, so it loads into a freshly built model.</summary>
public sealed class AdamWOptimizer : IDisposable
{
    public const string StateFileName = "optimizer.safetensors";
    public const string StepsFileName = "optimizer.json";
    private const string ExpAvgPrefix = "exp_avg.";
    private const string ExpAvgSqPrefix = "exp_avg_sq.";

    private sealed class State(NamedParameter p, bool decayed) : IDisposable
    {
        public NamedParameter Target { get; } = p;
        public bool Decayed { get; } = decayed;
        public long Step;
        public Tensor? ExpAvg;
        public Tensor? ExpAvgSq;

        public void Dispose()
        {
            ExpAvg?.Dispose();
            ExpAvgSq?.Dispose();
            ExpAvg = ExpAvgSq = null;
        }
    }

    private readonly List<State> _states;
    private readonly Dictionary<string, State> _byName;

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }
    public double WeightDecay { get; }
    public IReadOnlyList<NamedParameter> Parameters { get; }

    public AdamWOptimizer(IReadOnlyList<NamedParameter> parameters, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8, double weightDecay = 0.0)
    {
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "must be in [0, 1)");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "must be in [0, 1)");
        if (!(epsilon > 0)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "must be positive");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "must be 0 or positive");
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        WeightDecay = weightDecay;
        Parameters = parameters;
        _states = parameters.Select(p => new State(p, ParameterGroups.IsDecayed(p.Name, p.Parameter.dim()))).ToList();
        _byName = new Dictionary<string, State>(StringComparer.Ordinal);
        foreach (var s in _states)
            if (!_byName.TryAdd(s.Target.Name, s)) throw new ArgumentException($"parameter \"{s.Target.Name}\" is given twice", nameof(parameters));
    }

    public static AdamWOptimizer For(IReadOnlyList<NamedParameter> parameters, TrainingSettings settings) =>
        new(parameters, settings.AdamBeta1, settings.AdamBeta2, settings.AdamEpsilon, settings.WeightDecay);

    /// <summary>Whether weight decay applies to parameter <paramref name="name"/>.</summary>
    public bool IsDecayed(string name) => StateOf(name).Decayed;

    /// <summary>Updates taken by parameter <paramref name="name"/> (PyTorch's per-parameter <c>state["step"]</c>).</summary>
    public long StepOf(string name) => StateOf(name).Step;

    /// <summary>One update of every parameter that has a gradient (parameters without one are left alone, as in
    /// PyTorch) at learning rate <paramref name="learningRate"/>.</summary>
    public void Step(double learningRate)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // fp32 parameters with fp32 gradients (plain fp32 training and fp32 masters under a bf16 compute dtype) go
        // through libtorch's fused multi-tensor AdamW: one kernel pass per tensor instead of nine elementwise ops.
        var fused = new Dictionary<(bool Decayed, long Step, DeviceType Device, double Scale), List<(State State, Tensor Grad)>>();
        foreach (var s in _states)
        {
            var grad = s.Target.Parameter.grad;
            if (grad is null) continue;
            if (FusedAdamW.Available && s.Target.Parameter.dtype == ScalarType.Float32 && grad.dtype == ScalarType.Float32 && !grad.is_sparse)
            {
                var key = (s.Decayed && WeightDecay != 0, s.Step + 1, s.Target.Parameter.device_type, s.Target.LearningRateScale);
                if (!fused.TryGetValue(key, out var list)) fused[key] = list = [];
                list.Add((s, grad));
                continue;
            }
            using var one = NewDisposeScope();
            Update(s, grad, learningRate * s.Target.LearningRateScale);
        }
        foreach (var ((decayed, step, _, scale), group) in fused)
        {
            foreach (var (s, _) in group)
            {
                s.ExpAvg ??= zeros_like(s.Target.Parameter).DetachFromDisposeScope();
                s.ExpAvgSq ??= zeros_like(s.Target.Parameter).DetachFromDisposeScope();
                s.Step++;
            }
            var device = group[0].State.Target.Parameter.device;
            using var stepTensor = tensor((float)step, ScalarType.Float32, device);
            FusedAdamW.Update(group.Select(g => (Tensor)g.State.Target.Parameter).ToArray(), group.Select(g => g.Grad).ToArray(),
                group.Select(g => g.State.ExpAvg!).ToArray(), group.Select(g => g.State.ExpAvgSq!).ToArray(), stepTensor,
                learningRate * scale, Beta1, Beta2, decayed ? WeightDecay : 0.0, Epsilon);
        }
    }

    /// <summary>Whether fp32 parameters go through libtorch's fused kernel in this process (false where the TorchScript
    /// function does not compile, e.g. a libtorch without <c>_fused_adamw_</c>; the per-tensor update then runs).</summary>
    internal static bool UsesFusedKernel => FusedAdamW.Available;

    private void Update(State s, Tensor grad, double lr)
    {
        var p = s.Target.Parameter;
        var g = grad.dtype == ScalarType.Float32 ? grad : grad.to(ScalarType.Float32);
        var master = p.dtype == ScalarType.Float32 ? (Tensor)p : p.to(ScalarType.Float32);
        if (s.ExpAvg is null)
        {
            s.ExpAvg = zeros_like(master).DetachFromDisposeScope();
            s.ExpAvgSq = zeros_like(master).DetachFromDisposeScope();
        }
        s.Step++;
        double biasCorrection1 = 1 - Math.Pow(Beta1, s.Step);
        double biasCorrection2Sqrt = Math.Sqrt(1 - Math.Pow(Beta2, s.Step));

        if (s.Decayed && WeightDecay != 0)
        {
            using var decay = (1 - lr * WeightDecay).ToScalar();
            master.mul_(decay);
        }
        using (var weight = tensor(1 - Beta1, ScalarType.Float32, master.device))
            s.ExpAvg.lerp_(g, weight);
        using (var beta2 = Beta2.ToScalar())
        using (var oneMinusBeta2 = (1 - Beta2).ToScalar())
            s.ExpAvgSq!.mul_(beta2).addcmul_(g, g, oneMinusBeta2);
        using var bc2 = biasCorrection2Sqrt.ToScalar();
        using var eps = Epsilon.ToScalar();
        using var negStepSize = (-(lr / biasCorrection1)).ToScalar();
        var denom = s.ExpAvgSq.sqrt().div_(bc2).add_(eps, One);
        master.addcdiv_(s.ExpAvg, denom, negStepSize);
        if (!ReferenceEquals(master, p)) p.copy_(master);
    }

    /// <summary>libtorch's <c>_fused_adamw_</c> (the kernel behind <c>torch.optim.AdamW(fused=True)</c>, same update
    /// as the single-tensor one), reached through a TorchScript function since TorchSharp does not bind it.</summary>
    private static class FusedAdamW
    {
        private static readonly Lazy<torch.jit.CompilationUnit?> Unit = new(() =>
        {
            try
            {
                return torch.jit.compile("""
                    def adamw(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor], step: Tensor,
                              lr: float, beta1: float, beta2: float, weight_decay: float, eps: float) -> int:
                        steps = [step for _ in params]
                        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=beta1, beta2=beta2,
                                            weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)
                        return 0
                    """ + "\n");   // the TorchScript parser wants the last line ended (a raw literal drops it)
            }
            catch (Exception)
            {
                return null;   // a libtorch without the fused kernel: the per-tensor update below is used instead
            }
        });

        public static bool Available => Unit.Value is not null;

        public static void Update(Tensor[] parameters, Tensor[] grads, Tensor[] expAvgs, Tensor[] expAvgSqs, Tensor step,
            double lr, double beta1, double beta2, double weightDecay, double eps)
        {
            var result = Unit.Value!.invoke("adamw", parameters, grads, expAvgs, expAvgSqs, step, lr, beta1, beta2, weightDecay, eps);
            (result as IDisposable)?.Dispose();
        }
    }

    // add_(Scalar) without an alpha creates an undisposed Scalar 1 on every call; this one is shared.
    private static readonly Scalar One = 1.ToScalar();

    /// <summary>Drops every gradient (PyTorch's <c>zero_grad(set_to_none=True)</c>): the next backward starts fresh.</summary>
    public void ZeroGrad()
    {
        foreach (var s in _states)
        {
            using var g = s.Target.Parameter.grad;
            if (g is not null) s.Target.Parameter.grad = null;
        }
    }

    private State StateOf(string name) =>
        _byName.TryGetValue(name, out var s) ? s : throw new ArgumentException($"\"{name}\" is not a parameter of this optimiser", nameof(name));

    private sealed record StepsFile(
        [property: JsonPropertyName("format")] int Format,
        [property: JsonPropertyName("betas")] double[] Betas,
        [property: JsonPropertyName("eps")] double Eps,
        [property: JsonPropertyName("weight_decay")] double WeightDecay,
        [property: JsonPropertyName("steps")] Dictionary<string, long> Steps);

    /// <summary>Writes the moments (<see cref="StateFileName"/>: <c>exp_avg.&lt;name&gt;</c>, <c>exp_avg_sq.&lt;name&gt;</c>,
    /// fp32) and the per-parameter step counts (<see cref="StepsFileName"/>) into <paramref name="folder"/>.</summary>
    public IReadOnlyList<string> Save(string folder)
    {
        Directory.CreateDirectory(folder);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var s in _states.Where(s => s.ExpAvg is not null))
        {
            tensors.Add(new(ExpAvgPrefix + s.Target.Name, s.ExpAvg!));
            tensors.Add(new(ExpAvgSqPrefix + s.Target.Name, s.ExpAvgSq!));
        }
        var statePath = Path.Combine(folder, StateFileName);
        SafeTensorsWriter.Write(statePath, tensors);
        var stepsPath = Path.Combine(folder, StepsFileName);
        var steps = new StepsFile(1, [Beta1, Beta2], Epsilon, WeightDecay,
            _states.Where(s => s.Step > 0).ToDictionary(s => s.Target.Name, s => s.Step, StringComparer.Ordinal));
        File.WriteAllText(stepsPath, JsonSerializer.Serialize(steps, CheckpointJson.Options));
        return [statePath, stepsPath];
    }

    /// <summary>Restores state written by <see cref="Save"/>, matching parameters by name. Throws
    /// <see cref="CheckpointException"/> when a parameter of this optimiser has no state in the files but the
    /// checkpoint has state for others (a different model or adapter set), or when the files disagree.</summary>
    public void Load(string folder)
    {
        var stepsPath = Path.Combine(folder, StepsFileName);
        var statePath = Path.Combine(folder, StateFileName);
        StepsFile steps;
        try
        {
            steps = JsonSerializer.Deserialize<StepsFile>(File.ReadAllText(stepsPath), CheckpointJson.Options)
                ?? throw new CheckpointException($"{stepsPath}: empty optimiser state");
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new CheckpointException($"{stepsPath}: cannot read the optimiser state: {e.Message}", e);
        }
        var unknown = steps.Steps.Keys.Where(k => !_byName.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
            throw new CheckpointException($"{stepsPath}: optimiser state for parameters this model does not train: " +
                $"{string.Join(", ", unknown.Take(5))}{(unknown.Count > 5 ? $" and {unknown.Count - 5} more" : "")}");

        using var file = OpenState(statePath);
        foreach (var s in _states)
        {
            s.Dispose();
            s.Step = 0;
            if (!steps.Steps.TryGetValue(s.Target.Name, out long step)) continue;
            try
            {
                s.ExpAvg = ReadMoment(file, ExpAvgPrefix + s.Target.Name, s);
                s.ExpAvgSq = ReadMoment(file, ExpAvgSqPrefix + s.Target.Name, s);
            }
            catch (ModelLoadException e)
            {
                throw new CheckpointException($"optimiser state for \"{s.Target.Name}\": {e.Message}", e);
            }
            s.Step = step;
        }
    }

    private static SafeTensorsFile OpenState(string path)
    {
        try { return SafeTensorsFile.Open(path); }
        catch (ModelLoadException e) { throw new CheckpointException($"cannot read the optimiser state: {e.Message}", e); }
    }

    private static Tensor ReadMoment(SafeTensorsFile file, string key, State s)
    {
        var p = s.Target.Parameter;
        var moment = torch.empty(p.shape, dtype: ScalarType.Float32, device: p.device);
        try
        {
            file.ReadInto(key, moment);
            return moment.DetachFromDisposeScope();
        }
        catch
        {
            moment.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var s in _states) s.Dispose();
    }
}
