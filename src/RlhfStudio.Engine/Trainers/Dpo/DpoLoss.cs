// The DPO objective (Rafailov et al. 2023, eq. 7) with conservative label smoothing (cDPO, Mitchell 2023), as TRL's
// DPOTrainer.dpo_loss with loss_type "sigmoid":
//
//   h        = (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))
//   loss     = -logsigmoid(beta * h) * (1 - eps) - logsigmoid(-beta * h) * eps
//   rewards  = beta * (log pi(y|x) - log ref(y|x))   (the implicit reward, detached; reported, not trained)
//
// log pi(y|x) is the SUM of the completion's token log-probabilities (TRL's default; no length normalisation).
//
// With rpo_alpha (RPO, Pang et al. 2024) TRL adds alpha * nll to every pair's loss, nll being the mean negative
// log-likelihood per chosen completion token of the batch: the chosen answers are also imitated, so their likelihood
// cannot sink together with the rejected ones'.
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RlhfStudio.Engine.Trainers.Dpo;

/// <summary>Per-pair losses (P) with their graph (the RPO term included), the detached implicit rewards (P) of each
/// side, and the RPO term's NLL (a scalar with its graph) when rpo_alpha is set.</summary>
public sealed record DpoLossResult(Tensor Losses, Tensor ChosenRewards, Tensor RejectedRewards, Tensor? ChosenNll = null);

public static class DpoLoss
{
    public const string ChosenMetric = Jobs.MetricNames.RewardsChosen;
    public const string RejectedMetric = Jobs.MetricNames.RewardsRejected;
    public const string AccuracyMetric = Jobs.MetricNames.RewardsAccuracies;
    public const string MarginsMetric = Jobs.MetricNames.RewardsMargins;
    public const string LogpsChosenMetric = Jobs.MetricNames.LogpsChosen;
    public const string LogpsRejectedMetric = Jobs.MetricNames.LogpsRejected;
    public const string NllMetric = Jobs.MetricNames.NllLoss;

    /// <summary>The sigmoid DPO loss of each pair from summed log-probabilities (P each, fp32).</summary>
    /// <param name="rpoAlpha">Weight of the chosen completions' NLL (null = plain DPO); <paramref name="chosenTokens"/>
    /// is the number of chosen completion tokens that <paramref name="policyChosen"/> sums over.</param>
    public static DpoLossResult Sigmoid(Tensor policyChosen, Tensor policyRejected, Tensor referenceChosen, Tensor referenceRejected,
        double beta, double labelSmoothing = 0, double? rpoAlpha = null, long chosenTokens = 0)
    {
        if (!(beta > 0)) throw new ArgumentOutOfRangeException(nameof(beta), "must be positive");
        if (!(labelSmoothing >= 0 && labelSmoothing < 0.5)) throw new ArgumentOutOfRangeException(nameof(labelSmoothing), "must be in [0, 0.5)");
        if (rpoAlpha is { } a && !(a >= 0)) throw new ArgumentOutOfRangeException(nameof(rpoAlpha), "must not be negative");
        if (rpoAlpha is not null && chosenTokens <= 0) throw new ArgumentOutOfRangeException(nameof(chosenTokens), "the RPO term needs the number of chosen tokens");
        using var scope = NewDisposeScope();
        using var b = beta.ToScalar();
        using var negB = (-beta).ToScalar();
        var logits = (policyChosen - policyRejected) - (referenceChosen - referenceRejected);
        var losses = F.logsigmoid(logits.mul(b)).neg();
        if (labelSmoothing > 0)
        {
            using var keep = (1 - labelSmoothing).ToScalar();
            using var flip = labelSmoothing.ToScalar();
            losses = losses.mul(keep) - F.logsigmoid(logits.mul(negB)).mul(flip);
        }
        Tensor? nll = null;
        if (rpoAlpha is { } alpha)
        {
            nll = policyChosen.sum().neg().div(chosenTokens);
            using var weight = alpha.ToScalar();
            losses = losses + nll.mul(weight);
        }
        Tensor chosenRewards, rejectedRewards;
        using (var noGrad = torch.no_grad())
        {
            chosenRewards = (policyChosen - referenceChosen).detach().mul(b);
            rejectedRewards = (policyRejected - referenceRejected).detach().mul(b);
        }
        return new DpoLossResult(losses.MoveToOuterDisposeScope(), chosenRewards.MoveToOuterDisposeScope(), rejectedRewards.MoveToOuterDisposeScope(),
            nll?.MoveToOuterDisposeScope());
    }

    /// <summary>Sums over the pairs of TRL's DPO metrics (the loop, or the evaluation, divides by pairs):
    /// rewards/chosen, rewards/rejected, rewards/accuracies (chosen reward above rejected), rewards/margins, and
    /// logps/chosen, logps/rejected (the policy's summed log-probabilities), and nll_loss (per pair) with rpo_alpha.</summary>
    public static Dictionary<string, double> MetricSums(DpoLossResult result, Tensor policyChosen, Tensor policyRejected)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var chosen = result.ChosenRewards.to(ScalarType.Float64);
        var rejected = result.RejectedRewards.to(ScalarType.Float64);
        var sums = new Dictionary<string, double>(StringComparer.Ordinal)
        {
            [ChosenMetric] = chosen.sum().item<double>(),
            [RejectedMetric] = rejected.sum().item<double>(),
            [AccuracyMetric] = chosen.gt(rejected).sum().item<long>(),
            [MarginsMetric] = (chosen - rejected).sum().item<double>(),
            [LogpsChosenMetric] = policyChosen.detach().to(ScalarType.Float64).sum().item<double>(),
            [LogpsRejectedMetric] = policyRejected.detach().to(ScalarType.Float64).sum().item<double>(),
        };
        if (result.ChosenNll is not null) sums[NllMetric] = result.ChosenNll.detach().item<float>() * chosen.shape[0];
        return sums;
    }
}
