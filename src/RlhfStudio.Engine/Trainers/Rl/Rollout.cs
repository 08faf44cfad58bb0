// One rollout batch (TRL PPOTrainer.train, the no_grad block): prompts -> sampled responses -> log-probabilities of
// policy and reference, values, scores. Log-probabilities are RECOMPUTED with a forward pass over query + response
// instead of taken from the sampling loop: the training forward then computes exactly the same function, so the PPO
// ratio starts at 1 (Huang et al. list the mismatch of generation-time and training-time logits as a pitfall).
using RlhfStudio.Engine.Generation;
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>Everything the optimisation phase needs about a batch of B responses of N positions (device tensors, owned).</summary>
public sealed class Rollout : IDisposable
{
    public required SequenceBatch Batch { get; init; }
    /// <summary>(B, N) bool: real response tokens (up to and including the stop token that ended each response).</summary>
    public required Tensor Real { get; init; }
    /// <summary>(B, N) policy log-probabilities at sampling time, <see cref="Advantages.InvalidLogProb"/> at padding.</summary>
    public required Tensor LogProbs { get; init; }
    public required Tensor RefLogProbs { get; init; }
    /// <summary>(B, N) values of the value model (PPO), 0 at padding.</summary>
    public Tensor? Values { get; init; }
    /// <summary>(B) sequence scores after the missing-EOS penalty.</summary>
    public required Tensor Scores { get; init; }
    /// <summary>(B) bool: the response ended with a stop token (EOS) rather than by running out of tokens.</summary>
    public required Tensor EndedWithStop { get; init; }
    public required IReadOnlyList<string> Prompts { get; init; }
    public required IReadOnlyList<string> Responses { get; init; }
    /// <summary>Real response tokens generated.</summary>
    public long ResponseTokens { get; init; }
    /// <summary>Seconds spent in each phase of collecting this batch.</summary>
    public RolloutPhases Times { get; set; } = new();

    public int Size => (int)Batch.Ids.shape[0];

    public void Dispose()
    {
        Batch.Ids.Dispose();
        Batch.AttentionMask.Dispose();
        Real.Dispose();
        LogProbs.Dispose();
        RefLogProbs.Dispose();
        Values?.Dispose();
        Scores.Dispose();
        EndedWithStop.Dispose();
    }
}

/// <summary>Seconds of each phase of collecting a rollout batch, as the PPO step lists them: the rollout proper
/// (the sampling loop: responses and, when taken there, their log-probabilities and values), the policy's own forward
/// when log-probabilities (and a value head's values) are recomputed, the reference pass, a separate value model's pass,
/// and scoring (decoding, the reward, the stop-token checks). <see cref="PolicyForward"/> and <see cref="ValueModel"/>
/// are null when that pass did not run (log-probabilities and values from the sampling loop; no separate value model).</summary>
public sealed record RolloutPhases(double Sampling = 0, double? PolicyForward = null, double Reference = 0, double? ValueModel = null, double Scoring = 0);

/// <summary>How rollouts are sampled.</summary>
/// <param name="Temperature">Sampling temperature; the log-probabilities use logits / (temperature + 1e-7).</param>
/// <param name="MaxNewTokens">Response length (TRL response_length).</param>
/// <param name="StopIds">Tokens that end a response (EOS).</param>
/// <param name="PadId">Id written after a response's end.</param>
/// <param name="ForwardBatchSize">Rows per forward pass when recomputing log-probabilities (TRL local_rollout_forward_batch_size).</param>
/// <param name="MissingEosPenalty">Subtracted from the score of responses without a stop token.</param>
/// <param name="LogProbsFromSampling">Take the policy's log-probabilities from the sampling loop's logits, as TRL's
/// PPOTrainer does (one forward fewer per rollout), instead of recomputing them with a forward over the whole
/// sequences (OpenRLHF's way), which makes the first ratio of a step exactly 1 (see RlSpec.RecomputeLogProbs).</param>
public sealed record RolloutSettings(double Temperature, int MaxNewTokens, IReadOnlyList<long> StopIds, long PadId, int ForwardBatchSize, double? MissingEosPenalty,
    bool LogProbsFromSampling = false);

/// <summary>Sampled responses: the sequences, the real-token mask of the responses and, when asked for, the sampling
/// loop's log-probability of each response token (<see cref="Advantages.InvalidLogProb"/> past the end) and a value
/// head's value of the state before each (0 past the end).</summary>
public sealed record SampledBatch(SequenceBatch Batch, Tensor Real, Tensor? LogProbs, Tensor? Values = null);

public static class RolloutSampler
{
    /// <summary>Samples responses with the policy (seeded by <paramref name="seed"/>) and returns the left-padded prompts
    /// followed by the truncated responses, and the real-token mask of the responses.</summary>
    public static (SequenceBatch Batch, Tensor Real) Sample(CausalLanguageModel model, IReadOnlyList<RlPrompt> prompts, RolloutSettings settings, long seed,
        CancellationToken cancel = default)
    {
        var sampled = Sample(model, prompts, settings, seed, withLogProbs: false, cancel);
        return (sampled.Batch, sampled.Real);
    }

    /// <summary>As <see cref="Sample(CausalLanguageModel, IReadOnlyList{RlPrompt}, RolloutSettings, long, CancellationToken)"/>,
    /// with the sampling loop's log-probabilities of the response tokens when <paramref name="withLogProbs"/>: logits /
    /// (temperature + 1e-7), log_softmax, at the sampled token, as TRL takes them from generate's scores.</summary>
    public static SampledBatch Sample(CausalLanguageModel model, IReadOnlyList<RlPrompt> prompts, RolloutSettings settings, long seed, bool withLogProbs,
        CancellationToken cancel = default, ValueHead? valueHead = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (ids, mask) = PromptBatch.LeftPad(prompts.Select(p => p.Ids).ToList(), settings.PadId, model.Device);
        var generation = new GenerationSettings
        {
            MaxNewTokens = settings.MaxNewTokens,
            Temperature = settings.Temperature,
            Seed = seed,
            EosTokenIds = settings.StopIds,
            PadTokenId = settings.PadId,
            ReturnLogProbs = withLogProbs,
        };
        using var result = TextGenerator.Generate(model, ids, mask, generation, cancel: cancel,
            readout: valueHead is null ? null : hidden => valueHead.Values(hidden));
        var (responses, real) = ResponseMasks.TruncateAfterStop(result.ResponseIds, settings.StopIds, settings.PadId);
        var batch = new SequenceBatch(torch.cat([ids, responses], 1).DetachFromDisposeScope(),
            torch.cat([mask.to(ScalarType.Bool), real], 1).DetachFromDisposeScope(), ids.shape[1]);
        var notReal = real.logical_not();
        var logProbs = withLogProbs ? result.LogProbs!.masked_fill(notReal, Advantages.InvalidLogProb).DetachFromDisposeScope() : null;
        var values = result.Readouts?.masked_fill(notReal, 0.0).DetachFromDisposeScope();
        return new SampledBatch(batch, real.DetachFromDisposeScope(), logProbs, values);
    }

    /// <summary>A full rollout: sampling, decoding, policy and reference log-probabilities, values and scores.</summary>
    public static Rollout Collect(RlModels models, IReadOnlyList<RlPrompt> prompts, RolloutSettings settings, long seed, CancellationToken cancel = default)
    {
        models.SetEvalMode();
        // TRL's route with a value head on the policy: log-probabilities and values both come from the sampling loop, and
        // the policy needs no forward of its own.
        var valueHead = settings.LogProbsFromSampling ? models.ValueHead : null;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (batch, real, sampledLogProbs, sampledValues) = Sample(models.Policy, prompts, settings, seed, settings.LogProbsFromSampling, cancel, valueHead);
        double sampleSeconds = clock.Elapsed.TotalSeconds;
        try
        {
            var rollout = Score(models, prompts, batch, real, settings, sampledLogProbs, sampledValues);
            rollout.Times = rollout.Times with { Sampling = sampleSeconds };
            return rollout;
        }
        catch
        {
            batch.Ids.Dispose();
            batch.AttentionMask.Dispose();
            real.Dispose();
            throw;
        }
    }

    /// <summary>The rollout of given sequences (takes ownership of <paramref name="batch"/>, <paramref name="real"/>,
    /// <paramref name="sampledLogProbs"/> and <paramref name="sampledValues"/>). The policy's log-probabilities are
    /// <paramref name="sampledLogProbs"/> when given (from the sampling loop), else recomputed by a forward; a value head's
    /// values are <paramref name="sampledValues"/> when given with them, else from that forward.</summary>
    public static Rollout Score(RlModels models, IReadOnlyList<RlPrompt> prompts, SequenceBatch batch, Tensor real, RolloutSettings settings,
        Tensor? sampledLogProbs = null, Tensor? sampledValues = null)
    {
        using var ownedLogProbs = sampledLogProbs;   // copied into the rollout by the concatenations below
        using var ownedValues = sampledValues;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double Lap()
        {
            double seconds = clock.Elapsed.TotalSeconds;
            clock.Restart();
            return seconds;
        }
        var responses = Decode(models, batch.Responses, real);
        double scoring = Lap();
        var logProbs = new List<Tensor>();
        var refLogProbs = new List<Tensor>();
        var values = new List<Tensor>();
        var scores = new List<Tensor>();
        long b = batch.Ids.shape[0];
        var chunks = new List<(SequenceBatch Batch, Tensor Real, List<int> Rows)>();
        for (long start = 0; start < b; start += settings.ForwardBatchSize)
        {
            long count = Math.Min(settings.ForwardBatchSize, b - start);
            chunks.Add((new SequenceBatch(batch.Ids.narrow(0, start, count), batch.AttentionMask.narrow(0, start, count), batch.PromptLength),
                real.narrow(0, start, count), Enumerable.Range((int)start, (int)count).ToList()));
        }
        // One model at a time, each inside its own inference-weights scope: the compute-dtype (and fused) weight copies
        // are made once per model instead of every forward casting (and concatenating) every weight again. The reference
        // scope opens after the adapters are disabled and closes before they come back (copies never outlive the
        // adapter state they were made in).
        // The sampling loop's log-probabilities (and, with a value head, its values) when it gave them; else a forward.
        bool fromSampling = sampledLogProbs is not null && (models.ValueHead is null || sampledValues is not null);
        if (fromSampling)
        {
            logProbs.Add(sampledLogProbs!);
            if (models.ValueHead is not null) values.Add(sampledValues!);
        }
        else if (models.ValueHead is { } head)
        {
            // A value head on the policy's trunk: one policy forward gives the values and, for the price of the LM head on
            // the response positions, exact log-probabilities (the sampled ones are not needed).
            using (models.Policy.UseInferenceWeights())
                foreach (var (chunk, chunkReal, _) in chunks)
                {
                    using var chunkScope = NewDisposeScope();
                    var predicting = SequenceForward.PredictingHidden(models.Policy, chunk);
                    var notReal = chunkReal.logical_not();
                    logProbs.Add(SequenceForward.TokenLogProbs(models.Policy, predicting, chunk.Responses, settings.Temperature, withEntropy: false).LogProbs
                        .masked_fill(notReal, Advantages.InvalidLogProb).MoveToOuterDisposeScope());
                    values.Add(head.Values(predicting).masked_fill(notReal, 0.0).MoveToOuterDisposeScope());
                }
        }
        else
            using (models.Policy.UseInferenceWeights())
                foreach (var (chunk, chunkReal, _) in chunks)
                    logProbs.Add(SequenceForward.ResponseLogProbs(models.Policy, chunk, chunkReal, settings.Temperature));
        double policyForward = Lap();
        using (models.UseReference(out var reference))
        using (reference.UseInferenceWeights())
            foreach (var (chunk, chunkReal, _) in chunks)
                refLogProbs.Add(SequenceForward.ResponseLogProbs(reference, chunk, chunkReal, settings.Temperature));
        double referencePass = Lap();
        if (models.Value is { } valueModel)
            using (valueModel.UseInferenceWeights())
                foreach (var (chunk, chunkReal, _) in chunks)
                    values.Add(SequenceForward.ResponseValues(valueModel, chunk, chunkReal));
        double valuePass = Lap();
        foreach (var (chunk, _, rows) in chunks)
            scores.Add(models.Scorer.Score(chunk, rows.Select(i => prompts[i].Text).ToList(), rows.Select(i => responses[i]).ToList()));
        var stopTensor = torch.tensor(settings.StopIds.ToArray(), dtype: ScalarType.Int64, device: batch.Ids.device);
        var last = ResponseMasks.LastRealIndex(real).clamp_min(0).unsqueeze(1);
        var ended = batch.Responses.gather(1, last).squeeze(1).isin(stopTensor).logical_and(real.any(-1));
        var score = torch.cat(scores, 0).to(ScalarType.Float32);
        // TRL missing_eos_penalty: a response that never stopped is scored lower, so that the policy learns to finish.
        if (settings.MissingEosPenalty is double penalty) score = score - ended.logical_not().to(ScalarType.Float32) * penalty;
        long tokens = real.sum().item<long>();
        scoring += Lap();
        return new Rollout
        {
            Batch = batch,
            Real = real,
            LogProbs = torch.cat(logProbs, 0).DetachFromDisposeScope(),
            RefLogProbs = torch.cat(refLogProbs, 0).DetachFromDisposeScope(),
            Values = models.HasValues ? torch.cat(values, 0).DetachFromDisposeScope() : null,
            Scores = score.DetachFromDisposeScope(),
            EndedWithStop = ended.DetachFromDisposeScope(),
            Prompts = prompts.Select(p => p.Text).ToList(),
            Responses = responses,
            ResponseTokens = tokens,
            Times = new RolloutPhases(PolicyForward: fromSampling ? null : policyForward, Reference: referencePass,
                ValueModel: models.Value is not null ? valuePass : null, Scoring: scoring),
        };
    }

    /// <summary>The real tokens of each response as text, special tokens (the EOS) removed.</summary>
    public static IReadOnlyList<string> Decode(RlModels models, Tensor responses, Tensor real)
    {
        using var scope = NewDisposeScope();
        long b = responses.shape[0], n = responses.shape[1];
        var ids = responses.cpu().data<long>().ToArray();
        var mask = real.cpu().data<bool>().ToArray();
        var texts = new List<string>((int)b);
        for (long r = 0; r < b; r++)
        {
            var row = new List<int>();
            for (long c = 0; c < n; c++)
                if (mask[r * n + c]) row.Add((int)ids[r * n + c]);
            texts.Add(models.Tokenizer.Decode(row));
        }
        return texts;
    }
}
