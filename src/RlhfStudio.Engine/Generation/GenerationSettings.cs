namespace RlhfStudio.Engine.Generation;

/// <summary>How to generate, with transformers' <c>GenerationConfig</c> meanings. Sampling applies, in HF's order,
/// temperature, then top-k, then top-p to the next-token logits; <see cref="Temperature"/> 0 means greedy decoding.</summary>
public sealed record GenerationSettings
{
    /// <summary>Tokens to generate at most per sequence (HF <c>max_new_tokens</c>).</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>EOS cannot be chosen before this many tokens (HF <c>min_new_tokens</c>: its logit is set to -inf).</summary>
    public int MinNewTokens { get; init; }

    /// <summary>Softmax temperature for sampling; 0 = greedy (argmax, no randomness).</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keep only the k most likely tokens before sampling; 0 = off (HF <c>top_k</c>).</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches p
    /// (always at least one); 1 = off (HF <c>top_p</c>).</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampling generator, created afresh for every call: same inputs and seed, same outputs.</summary>
    public long Seed { get; init; }

    /// <summary>Ids that end a sequence (emitted, then the sequence only produces padding). Null = the model config's
    /// eos_token_id(s), plus the tokenizer's EOS for the text-level calls.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }

    /// <summary>Further ids that end a sequence, like EOS (e.g. ChatML's &lt;|im_end|&gt;).</summary>
    public IReadOnlyList<long> StopTokenIds { get; init; } = [];

    /// <summary>Texts that end a sequence once its decoded response ends with one of them (HF <c>stop_strings</c>;
    /// the stop text is kept in the output, as in transformers). Needs a tokenizer.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Id written after a sequence has ended. Null = tokenizer pad, config pad, then the first EOS id, then 0.</summary>
    public long? PadTokenId { get; init; }

    /// <summary>Also return, per generated token, log_softmax(logits / (T + 1e-7)) at the chosen token (TRL's PPO
    /// logprobs; T = 1 for greedy). Computed from the model's raw logits, before min-new-tokens, top-k and top-p.</summary>
    public bool ReturnLogProbs { get; init; }

    /// <summary>One-token decode steps of Llama-family models on an AVX-512 CPU run as fused managed SIMD kernels
    /// (<see cref="CpuDecoder"/>: fp32 activations, the same weights and cache) instead of libtorch ops, ~3-5x faster
    /// per step at batch 8; elsewhere, or false, every step runs on libtorch.</summary>
    public bool FusedCpuDecode { get; init; } = true;

    public bool IsGreedy => Temperature == 0;

    /// <summary>The temperature the returned log-probabilities use.</summary>
    public double LogProbTemperature => IsGreedy ? 1.0 : Temperature;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad field.</summary>
    public void Validate()
    {
        if (MaxNewTokens <= 0) throw new ArgumentException($"max_new_tokens must be at least 1, got {MaxNewTokens}");
        if (MinNewTokens < 0 || MinNewTokens > MaxNewTokens)
            throw new ArgumentException($"min_new_tokens must be between 0 and max_new_tokens ({MaxNewTokens}), got {MinNewTokens}");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new ArgumentException($"temperature must be 0 (greedy) or positive, got {Temperature}");
        if (TopK < 0) throw new ArgumentException($"top_k must be 0 (off) or positive, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top_p must be in (0, 1], got {TopP}");
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new ArgumentException("stop strings must not be empty");
    }
}
