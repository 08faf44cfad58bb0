using RlhfStudio.Engine.Models;

namespace RlhfStudio.Bench.Workloads;

/// <summary>Forward FLOPs of a decoder (PaLM's accounting, forward third): 2 x non-embedding parameters per token for
/// the weight matmuls, 2 x vocab x hidden per token for the LM head (tied to the embedding, so not in the
/// non-embedding count), and 4 x layers x hidden x context per token for QK^T and attention x V (causal masking is
/// not credited as savings).</summary>
public static class ModelFlops
{
    public const string Formula = "FLOPs = tokens x (2 x N_non_embedding + 2 x vocab x hidden [LM head] + 4 x layers x hidden x context [attention])";

    public static double Forward(ModelConfig c, long nonEmbeddingParameters, long tokens, double averageContext, bool lmHead = true) =>
        tokens * (2.0 * nonEmbeddingParameters + (lmHead ? 2.0 * c.VocabSize * c.HiddenSize : 0)
                  + 4.0 * c.NumHiddenLayers * c.NumAttentionHeads * c.HeadDim * averageContext);
}
