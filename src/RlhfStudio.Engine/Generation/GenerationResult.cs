using static TorchSharp.torch;

namespace RlhfStudio.Engine.Generation;

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason { Eos, StopToken, StopString, Length }

/// <summary>One decoding step, for streaming: the token each row produced, and whether that row was still
/// generating (rows that had finished get the pad id and <c>Active = false</c>).</summary>
public sealed record GenerationStep(int Step, IReadOnlyList<long> Tokens, IReadOnlyList<bool> Active);

/// <summary>Output of <see cref="TextGenerator.Generate"/>. Tensors are on the model's device, owned by this object
/// (dispose it). N = steps actually run (at most max_new_tokens; fewer when every row finished early).</summary>
public sealed class GenerationResult : IDisposable
{
    internal GenerationResult(Tensor sequences, Tensor responseIds, Tensor responseMask, Tensor responseLengths, Tensor? logProbs,
        IReadOnlyList<IReadOnlyList<long>> tokens, IReadOnlyList<FinishReason> finishReasons, long promptLength, Tensor? readouts, string decoder)
    {
        Readouts = readouts;
        Decoder = decoder;
        Sequences = sequences;
        ResponseIds = responseIds;
        ResponseMask = responseMask;
        ResponseLengths = responseLengths;
        LogProbs = logProbs;
        Tokens = tokens;
        FinishReasons = finishReasons;
        PromptLength = promptLength;
    }

    /// <summary>(B, P + N) int64: the left-padded prompts followed by the responses (as HF's generate returns).</summary>
    public Tensor Sequences { get; }
    /// <summary>(B, N) int64: generated ids; after a row's end the pad id.</summary>
    public Tensor ResponseIds { get; }
    /// <summary>(B, N) bool: true for real generated tokens, including the EOS / stop token that ended a row.</summary>
    public Tensor ResponseMask { get; }
    /// <summary>(B) int64: real tokens per row (the number of true entries of <see cref="ResponseMask"/>).</summary>
    public Tensor ResponseLengths { get; }
    /// <summary>(B, N) fp32 when asked for: log_softmax(logits / (T + 1e-7)) at each chosen token, 0 where masked.</summary>
    public Tensor? LogProbs { get; }
    /// <summary>(B, N) fp32 when a hidden-state readout was given: its value for the hidden state that chose each token
    /// (a value head's estimate of the state before the token), 0 where masked.</summary>
    public Tensor? Readouts { get; }
    /// <summary>Per row, the real generated ids (the EOS / stop token included).</summary>
    public IReadOnlyList<IReadOnlyList<long>> Tokens { get; }
    public IReadOnlyList<FinishReason> FinishReasons { get; }
    /// <summary>P, the padded prompt length.</summary>
    public long PromptLength { get; }
    /// <summary>What ran the decode steps: "fused CPU kernels", or "libtorch ops" with the reason (for logs and the studio).</summary>
    public string Decoder { get; }

    public void Dispose()
    {
        Sequences.Dispose();
        ResponseIds.Dispose();
        ResponseMask.Dispose();
        ResponseLengths.Dispose();
        LogProbs?.Dispose();
        Readouts?.Dispose();
    }
}
