using RlhfStudio.Engine.Models;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Model FLOPs (PaLM's accounting, as in /work/shared/notes/benchmarking.md): the weight matmuls count 2 FLOPs
/// per parameter per token forward (non-embedding parameters plus the tied LM head, vocab x hidden), attention counts
/// 4 x layers x hidden x context per token forward (QK^T and attention x V; causal masking is not credited as
/// savings); backward is twice the forward. Recomputation and elementwise work are not counted.</summary>
public static class ModelFlops
{
    public const string Formula =
        "training FLOPs = tokens x (6 x (N_non_embedding + vocab x hidden [tied LM head]) + 12 x layers x hidden x seq_len); " +
        "forward/generation FLOPs = tokens x (2 x (N_non_embedding + vocab x hidden) + 4 x layers x hidden x context)";

    public static double Forward(ModelConfig c, long nonEmbeddingParameters, long tokens, double averageContext, bool lmHead = true) =>
        tokens * (2.0 * nonEmbeddingParameters + (lmHead ? 2.0 * c.VocabSize * c.HiddenSize : 0)
                  + 4.0 * c.NumHiddenLayers * c.NumAttentionHeads * c.HeadDim * averageContext);

    public static double Training(ModelConfig c, long nonEmbeddingParameters, long tokens, int sequenceLength) =>
        3 * Forward(c, nonEmbeddingParameters, tokens, sequenceLength);
}
