// Forward passes over query + response (TRL trl/trainer/utils.py forward / get_reward and the logprob lines of
// PPOTrainer), with an explicit attention mask: left padding of the prompt and padding after each response's end
// are masked, whatever their ids. Positions are cumsum(mask) - 1, as TRL's exclusive cumsum gives real tokens.
using RlhfStudio.Engine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Trainers.Rl;

/// <summary>A batch of query + response sequences: ids (B, P + N), attention mask (B, P + N) and the response part.</summary>
public sealed record SequenceBatch(Tensor Ids, Tensor AttentionMask, long PromptLength)
{
    public long ResponseLength => Ids.shape[1] - PromptLength;
    public Tensor Responses => Ids.narrow(1, PromptLength, ResponseLength);
}

public static class SequenceForward
{
    /// <summary>The final hidden states (B, N, C) of the positions that predict each response token (P - 1 .. P + N - 2).</summary>
    public static Tensor PredictingHidden(TransformerModel model, SequenceBatch batch)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Hidden(batch.Ids, batch.AttentionMask);                               // (B, P+N, C)
        return hidden.narrow(1, batch.PromptLength - 1, batch.ResponseLength).MoveToOuterDisposeScope();
    }

    /// <summary>Log-probabilities (B, N) of the response tokens under <paramref name="model"/>, <see cref="Advantages.InvalidLogProb"/>
    /// where <paramref name="real"/> is false.</summary>
    public static Tensor ResponseLogProbs(CausalLanguageModel model, SequenceBatch batch, Tensor real, double temperature)
    {
        using var scope = NewDisposeScope();
        var (logProbs, _) = TokenLogProbs(model, PredictingHidden(model, batch), batch.Responses, temperature, withEntropy: false);
        return logProbs.masked_fill(real.logical_not(), Advantages.InvalidLogProb).MoveToOuterDisposeScope();
    }

    /// <summary>Log-probabilities (B, N) of <paramref name="tokens"/> under the distributions the hidden states
    /// <paramref name="predicting"/> (B, N, C) give at <paramref name="temperature"/> (logits / (T + 1e-7), as TRL), and
    /// with <paramref name="withEntropy"/> their entropies (B, N, no graph; TRL's entropy_from_logits): log_softmax at
    /// each chosen token (TRL's selective_log_softmax) without materialising fp32 logits (see CausalLanguageModel.TokenLogProbs).</summary>
    public static (Tensor LogProbs, Tensor? Entropy) TokenLogProbs(CausalLanguageModel model, Tensor predicting, Tensor tokens, double temperature, bool withEntropy) =>
        model.TokenLogProbs(predicting, tokens, temperature + 1e-7, withEntropy);

    /// <summary>Per-token values (B, N) fp32 of the states before each response token (TRL: value[:, P - 1 : -1]), 0 where
    /// <paramref name="real"/> is false.</summary>
    public static Tensor ResponseValues(ScoreModel valueModel, SequenceBatch batch, Tensor real)
    {
        using var scope = NewDisposeScope();
        var hidden = valueModel.Hidden(batch.Ids, batch.AttentionMask);
        var predicting = hidden.narrow(1, batch.PromptLength - 1, batch.ResponseLength);
        var values = valueModel.Scores(predicting).squeeze(-1).to(ScalarType.Float32);
        return values.masked_fill(real.logical_not(), 0.0).MoveToOuterDisposeScope();
    }

    /// <summary>Reward-model scores (B) fp32 pooled at each sequence's last real token (the EOS that ended a response is a
    /// real token: the reward model was trained on completions that end with it).</summary>
    public static Tensor SequenceScores(ScoreModel rewardModel, SequenceBatch batch)
    {
        using var scope = NewDisposeScope();
        var hidden = rewardModel.Hidden(batch.Ids, batch.AttentionMask);                         // (B, T, C)
        long t = batch.Ids.shape[1];
        var index = torch.arange(t, dtype: ScalarType.Int64, device: batch.Ids.device).unsqueeze(0);
        var last = (index * batch.AttentionMask.to(ScalarType.Int64)).argmax(-1);              // (B) last real position
        var gathered = hidden.gather(1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[2]));   // (B, 1, C)
        return rewardModel.Scores(gathered).squeeze(1).select(-1, 0).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }
}
