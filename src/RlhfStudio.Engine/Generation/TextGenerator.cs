// Autoregressive decoding with a preallocated KV cache, following transformers' generate(): the whole left-padded
// prompt batch in one forward, then one token per step; finished rows keep emitting pad until every row is done.
using RlhfStudio.Engine.Models;
using RlhfStudio.Engine.Runtime;
using RlhfStudio.Engine.Text;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Generation;

public static partial class TextGenerator
{
    /// <summary>TRL divides logits by (temperature + 1e-7) before log_softmax; the logprobs here match that.</summary>
    public const double LogProbTemperatureEpsilon = 1e-7;

    /// <summary><see cref="GenerationResult.Decoder"/> when the fused CPU decoder ran the decode steps.</summary>
    public const string FusedDecoderName = "fused CPU kernels";

    /// <summary>Generates continuations of a batch of prompts.</summary>
    /// <param name="inputIds">(B, P) int64 prompts, left padded.</param>
    /// <param name="attentionMask">(B, P), 1 = real token, 0 = padding; null = no padding.</param>
    /// <param name="onStep">Called after every step with the new token of each row (streaming).</param>
    /// <param name="tokenizer">Needed for <see cref="GenerationSettings.StopStrings"/> and to pick a pad id.</param>
    /// <param name="readout">Maps final hidden states (B, T, C), each the state that chose a token, to one value each (B, T),
    /// e.g. PPO's value head on the policy's trunk; called on blocks of steps, collected into <see cref="GenerationResult.Readouts"/> (fp32).</param>
    public static GenerationResult Generate(CausalLanguageModel model, Tensor inputIds, Tensor? attentionMask, GenerationSettings settings,
        Action<GenerationStep>? onStep = null, TextTokenizer? tokenizer = null, CancellationToken cancel = default, Func<Tensor, Tensor>? readout = null)
    {
        settings.Validate();
        if (inputIds.ndim != 2 || inputIds.dtype != ScalarType.Int64 || inputIds.shape[1] == 0)
            throw new ArgumentException($"inputIds must be (B, P) int64 with P >= 1, got [{string.Join(", ", inputIds.shape)}] {inputIds.dtype}");
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(inputIds.shape))
            throw new ArgumentException($"attentionMask must have the shape of inputIds [{string.Join(", ", inputIds.shape)}], got [{string.Join(", ", attentionMask.shape)}]");
        if (settings.StopStrings.Count > 0 && tokenizer is null)
            throw new ArgumentException("stop strings need a tokenizer to decode the responses");

        var eosIds = settings.EosTokenIds ?? model.Config.EosTokenIds;
        var stopIds = eosIds.Concat(settings.StopTokenIds).Distinct().ToArray();
        long pad = settings.PadTokenId ?? tokenizer?.PadId ?? model.Config.PadTokenId ?? (eosIds.Count > 0 ? eosIds[0] : 0);
        long vocab = model.Config.VocabSize;
        foreach (var id in stopIds.Append(pad))
            if (id < 0 || id >= vocab) throw new ArgumentException($"token id {id} (eos, stop or pad) is outside the vocabulary (0..{vocab - 1})");

        using var noGrad = torch.no_grad();
        // Weights cast (and q/k/v, gate/up concatenated) once for the whole generation instead of on every step.
        using var inferenceWeights = model.UseInferenceWeights();
        using var scope = NewDisposeScope();
        var device = model.Device;
        long batch = inputIds.shape[0], promptLength = inputIds.shape[1];
        int maxNew = settings.MaxNewTokens;
        long total = promptLength + maxNew;

        var ids = inputIds.to(device);
        var promptMask = attentionMask is null
            ? torch.ones([batch, promptLength], dtype: ScalarType.Int64, device: device)
            : attentionMask.to(ScalarType.Int64).to(device);
        CheckPrompts(ids, promptMask, vocab);
        var realLengths = promptMask.sum(-1, keepdim: true, type: ScalarType.Int64);             // (B, 1)
        if (model.Config.Family == ModelFamily.Gpt2 && realLengths.max().item<long>() + maxNew > model.Config.MaxPositionEmbeddings)
            throw new ArgumentException($"prompt plus max_new_tokens exceeds the model's {model.Config.MaxPositionEmbeddings} positions");

        // Without padding the model needs no mask at all: plain causal prefill and an unmasked one-token decode, the
        // cheapest attention paths. With padding, the full (B, P + N) mask is built once and narrowed each step; new
        // columns are 1 from the start, as HF appends a 1 per step for every row, finished or not.
        bool padded = promptMask.eq(0).any().item<bool>();
        Tensor? fullMask = null;
        if (padded)
        {
            fullMask = torch.ones([batch, total], dtype: ScalarType.Int64, device: device);
            fullMask.narrow(1, 0, promptLength).copy_(promptMask);
        }
        // Positions as HF: cumsum(mask) - 1 with padded slots set to 1; the first new token sits at the real length.
        var promptPositions = promptMask.cumsum(-1) - 1;
        using var one = 1.ToScalar();
        promptPositions.masked_fill_(promptMask.eq(0), one);
        var nextPosition = realLengths.clone();                                                  // (B, 1)

        var responses = torch.full([batch, maxNew], pad, dtype: ScalarType.Int64, device: device);
        var logProbs = settings.ReturnLogProbs ? torch.zeros([batch, maxNew], dtype: ScalarType.Float32, device: device) : null;
        using var readouts = readout is null ? null : new ReadoutBuffer(readout, batch, maxNew, device);
        Tensor? stepHidden = null;   // the final hidden state (B, C) the current logits came from, when reading out
        double logProbDivisor = settings.LogProbTemperature + LogProbTemperatureEpsilon;
        // Per row, log-sum-exp of the current logits / logProbDivisor when the fused decoder made them (else null: the
        // prefill's logits); one buffer, read before the next step rewrites it.
        float[]? stepLogSumExp = null;
        var unfinished = torch.ones([batch], dtype: ScalarType.Bool, device: device);
        var padTensor = torch.full([batch], pad, dtype: ScalarType.Int64, device: device);
        var stopTensor = torch.tensor(stopIds, dtype: ScalarType.Int64, device: device);
        var eosTensor = torch.tensor(eosIds.ToArray(), dtype: ScalarType.Int64, device: device);
        // Decode steps after the prefill: fused CPU kernels where they cover the model, else libtorch ops.
        string? whyNot = !settings.FusedCpuDecode ? "fused decode off" : maxNew == 1 ? "one token: no decode step" : null;
        using var fused = whyNot is null ? CpuDecoder.TryCreate(model, out whyNot) : null;
        using var cache = model.NewCache(batch, total, fused?.CacheDType);
        var generator = new torch.Generator((ulong)settings.Seed, device);
        using var logProbScale = (settings.LogProbTemperature + LogProbTemperatureEpsilon).ToScalar();
        using var zero = 0.0f.ToScalar();

        var host = new StepBookkeeping(batch, eosIds, settings, tokenizer);
        int steps = 0;
        var logits = NextLogits(model, ids, fullMask?.narrow(1, 0, promptLength), promptPositions, cache, readouts is not null, out stepHidden);   // (B, V) fp32
        // Left padding (checked above) makes each row's attended cache slots one range, from its first real prompt token.
        long[] hostPositions = realLengths.cpu().data<long>().ToArray();
        var decoder = fused is not null && fused.TryBind(cache, hostPositions.Select(n => promptLength - n).ToArray(), out whyNot) ? fused : null;
        // The decoder's own threads take the cores; libtorch's ops between steps (sampling) run on this thread alone.
        // With its OpenMP team they left a worker spinning after each op that starved the decoder's helper: a 25 us
        // parallel matmul took 400 us after a softmax.
        int torchThreads = torch.get_num_threads();
        if (decoder is not null) torch.set_num_threads(1);
        try
        {
            for (int step = 0; step < maxNew; step++)
            {
                cancel.ThrowIfCancellationRequested();
                using var stepScope = NewDisposeScope();
                var next = Choose(logits, settings, step < settings.MinNewTokens ? eosTensor : null, generator);   // (B)
                var active = unfinished.clone();
                next = torch.where(active, next, padTensor);
                responses.narrow(1, step, 1).copy_(next.unsqueeze(1));
                if (readouts is not null && stepHidden is not null)
                {
                    readouts.Add(step, stepHidden);
                    stepHidden.Dispose();
                    stepHidden = null;
                }
                if (stopIds.Length > 0) unfinished.logical_and_(next.isin(stopTensor).logical_not());

                // The one host read per step: the new tokens, for streaming, stop strings and the end-of-loop test.
                var tokens = next.cpu().data<long>().ToArray();
                var stringStops = host.Record(step, tokens);
                if (logProbs is not null)
                {
                    // The chosen tokens' log-probabilities: on the fused path (AVX-512 CPU) the decoder gave each row's
                    // log-sum-exp with the logits (~12 us a step on its threads, against 22-36 us for a separate pass on
                    // this one), else (the prefill's logits) one kernel pass over them, else libtorch ops.
                    if (stepLogSumExp is not null) SampledLogProbs(logits, tokens, host.LastStepActive, logProbDivisor, stepLogSumExp, logProbs, step);
                    else if (decoder is not null)
                        LinearLogProbs.SampledTokens(logits, tokens, host.LastStepActive, logProbDivisor, logProbs, step);
                    else
                    {
                        var all = F.log_softmax(logits.div(logProbScale), -1);
                        var chosen = all.gather(1, next.unsqueeze(1)).squeeze(1).masked_fill(active.logical_not(), zero);
                        logProbs.narrow(1, step, 1).copy_(chosen.unsqueeze(1));
                    }
                }
                if (stringStops.Count > 0)
                {
                    using var rows = torch.tensor(stringStops.ToArray(), dtype: ScalarType.Int64, device: device);
                    using var no = false.ToScalar();
                    unfinished.index_fill_(0, rows, no);
                }
                steps = step + 1;
                onStep?.Invoke(new GenerationStep(step, tokens, host.LastStepActive));
                if (host.AllFinished || step == maxNew - 1) break;

                var previous = logits;
                if (decoder is not null && logProbs is not null) stepLogSumExp ??= new float[batch];
                logits = decoder is not null
                    ? FusedLogits(decoder, tokens, hostPositions, readouts is not null, out stepHidden, stepLogSumExp, (float)logProbDivisor)
                    : NextLogits(model, next.unsqueeze(1), fullMask?.narrow(1, 0, promptLength + step + 1), nextPosition, cache, readouts is not null, out stepHidden);
                previous.Dispose();
                // Positions of the next tokens: on the host for the fused decoder, as a tensor for libtorch.
                if (decoder is not null) for (int b = 0; b < hostPositions.Length; b++) hostPositions[b]++;
                else nextPosition.add_(one);
                // Scalars are not tracked by dispose scopes; a gen-0 collection frees them before glibc pins the memory
                // (see the TorchSharp notes). The decode path makes none any more (shared Scalars), so a collection every
                // 64 steps is enough for what callers' code may make (each one cost ~1 ms, 4% of a tiny decode).
                if (step % 64 == 63) GC.Collect(0);
            }
        }
        finally
        {
            if (decoder is not null) torch.set_num_threads(torchThreads);
            logits.Dispose();
            stepHidden?.Dispose();
        }

        var responseIds = responses.narrow(1, 0, steps).contiguous();
        var lengths = torch.tensor(host.Lengths, dtype: ScalarType.Int64, device: device);
        var mask = torch.arange(steps, dtype: ScalarType.Int64, device: device).unsqueeze(0).lt(lengths.unsqueeze(1));
        var sequences = torch.cat([ids, responseIds], 1);
        var lp = logProbs?.narrow(1, 0, steps).contiguous();
        var ro = readouts?.Finish(steps).masked_fill(mask.logical_not(), zero);
        var result = new GenerationResult(sequences.DetachFromDisposeScope(), responseIds.DetachFromDisposeScope(), mask.DetachFromDisposeScope(),
            lengths.DetachFromDisposeScope(), lp?.DetachFromDisposeScope(), host.Tokens, host.Reasons, promptLength, ro?.DetachFromDisposeScope(),
            decoder is not null ? FusedDecoderName : $"libtorch ops ({whyNot})");
        return result;
    }

    /// <summary>The next token of every row: argmax when greedy, else a draw from the warped distribution.</summary>
    private static Tensor Choose(Tensor logits, GenerationSettings settings, Tensor? suppress, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        var scores = suppress is not null && suppress.numel() > 0 ? LogitsWarpers.Suppress(logits, suppress) : logits;
        if (settings.IsGreedy) return scores.argmax(-1).MoveToOuterDisposeScope();
        if (settings.TopK == 0 && settings.TopP >= 1.0) return Sampling.DrawFromLogits(scores, settings.Temperature, generator).MoveToOuterDisposeScope();
        var warped = LogitsWarpers.Warp(scores, settings.Temperature, settings.TopK, settings.TopP);
        var probs = warped.softmax(-1);
        return Sampling.Draw(probs, generator).MoveToOuterDisposeScope();
    }

    /// <summary>Runs the model on new tokens (writing the cache) and returns fp32 logits of the last position (B, V), and
    /// with <paramref name="wantHidden"/> the final hidden state of that position (B, C). Only the last position goes
    /// through the LM head: during prefill the others are not needed.</summary>
    private static Tensor NextLogits(CausalLanguageModel model, Tensor ids, Tensor? mask, Tensor positions, KvCache cache,
        bool wantHidden, out Tensor? lastHidden)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Hidden(ids, mask, positions, cache);                    // (B, T, C)
        var last = hidden.narrow(1, hidden.shape[1] - 1, 1);                        // (B, 1, C)
        var logits = model.Logits(last).squeeze(1).to(ScalarType.Float32);        // (B, V)
        lastHidden = wantHidden ? last.squeeze(1).DetachFromDisposeScope() : null;
        return logits.DetachFromDisposeScope();
    }

    /// <summary><see cref="NextLogits"/> for one new token per row through <paramref name="decoder"/>.</summary>
    private static Tensor FusedLogits(CpuDecoder decoder, long[] tokens, long[] positions, bool wantHidden, out Tensor? lastHidden,
        float[]? logSumExp, float logSumExpDivisor)
    {
        using var scope = NewDisposeScope();
        var logits = decoder.Step(tokens, positions, wantHidden, out var hidden, logSumExp, logSumExpDivisor);
        lastHidden = hidden?.DetachFromDisposeScope();
        return logits.DetachFromDisposeScope();
    }

    /// <summary>Column <paramref name="column"/> of <paramref name="into"/> (B, S) fp32: each active row's logit of its
    /// token / <paramref name="divisor"/> minus the row's <paramref name="logSumExp"/>, 0 for the others.</summary>
    private static unsafe void SampledLogProbs(Tensor logits, long[] tokens, IReadOnlyList<bool> active, double divisor, float[] logSumExp, Tensor into, long column)
    {
        long v = logits.shape[1], stride = into.shape[1];
        float* data = (float*)NativeTensors.Data(logits, ScalarType.Float32), output = (float*)NativeTensors.Data(into, ScalarType.Float32);
        for (int r = 0; r < tokens.Length; r++)
            output[r * stride + column] = active[r] ? data[r * v + tokens[r]] / (float)divisor - logSumExp[r] : 0f;
    }

    /// <summary>A hidden-state readout (a value head) over blocks of decode steps: each step's hidden states are copied
    /// into a (B, Block, C) buffer and the readout runs once per block, not once per step (~8 small ops a step, ~30-70 us
    /// each time at the tiny bench's size; ~6 ms of a 128-token rollout).</summary>
    private sealed class ReadoutBuffer(Func<Tensor, Tensor> readout, long batch, int maxNew, Device device) : IDisposable
    {
        private const int Block = 32;
        // Owned here, outside every dispose scope: the buffer is made inside a step's scope and lives for the whole loop.
        private readonly Tensor _values = torch.zeros([batch, maxNew], dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
        private Tensor? _hidden;
        private int _start, _count;

        /// <summary>Keeps <paramref name="hidden"/> (B, C), the state that chose the token of <paramref name="step"/>.</summary>
        public void Add(int step, Tensor hidden)
        {
            if (step != _start + _count) throw new InvalidOperationException($"readout steps out of order: {step} after {_start + _count - 1}");
            // fp32: the fused decoder's states are fp32, the prefill's in the activation dtype; both kept exactly.
            _hidden ??= torch.empty([batch, Block, hidden.shape[1]], dtype: ScalarType.Float32, device: device).DetachFromDisposeScope();
            _hidden.select(1, _count).copy_(hidden);
            if (++_count == Block) Flush();
        }

        /// <summary>The readouts (B, <paramref name="steps"/>) fp32 of every step added.</summary>
        public Tensor Finish(int steps)
        {
            Flush();
            return _values.narrow(1, 0, steps).contiguous();
        }

        private void Flush()
        {
            if (_count == 0) return;
            using var scope = NewDisposeScope();
            var values = readout(_hidden!.narrow(1, 0, _count)).to(ScalarType.Float32);    // (B, count)
            _values.narrow(1, _start, _count).copy_(values);
            _start += _count;
            _count = 0;
        }

        public void Dispose()
        {
            _values.Dispose();
            _hidden?.Dispose();
        }
    }

    private static void CheckPrompts(Tensor ids, Tensor mask, long vocab)
    {
        using var scope = NewDisposeScope();
        if (ids.min().item<long>() < 0 || ids.max().item<long>() >= vocab)
            throw new ArgumentException($"prompt ids must be in 0..{vocab - 1}");
        if (mask.sum(-1).min().item<long>() == 0) throw new ArgumentException("a prompt has no real token (its attention mask is all 0)");
        // Left padding: once a row's mask turns 1 it stays 1 (otherwise the last column is not the prompt's last token).
        if (mask.narrow(1, 1, mask.shape[1] - 1).lt(mask.narrow(1, 0, mask.shape[1] - 1)).any().item<bool>())
            throw new ArgumentException("prompts must be left padded: a 0 follows a 1 in the attention mask");
    }
}
