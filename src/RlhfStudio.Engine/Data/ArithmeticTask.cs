// The built-in task: arithmetic questions whose answers can be checked exactly, so a newcomer can run
// SFT -> reward model -> PPO/DPO on a CPU in minutes with no downloads, and see whether RLHF helped by
// the true score (ArithmeticScorer) rather than by the learned reward.
//
//   Question: What is 37 + 45?\n\nAnswer: 82                    (after the stackllama template)
//
// Problems: two-digit addition (0-99 + 0-99), subtraction with a non-negative result (0-99 - 0..a) and
// small multiplication (2-9 x 2-19), each in a few phrasings including short word problems. A problem is
// in the test split when a fixed hash of (operation, operands in canonical order) falls in 10% of the
// range, whatever the seed and phrasing: no test question appears in any training set. Seeds only change
// which problems are drawn and in what order.
using System.Text.RegularExpressions;

namespace RlhfStudio.Engine.Data;

/// <summary>One problem: <see cref="A"/> <see cref="Op"/> <see cref="B"/> ('+', '-' or '*').</summary>
public sealed record ArithmeticProblem(int A, char Op, int B)
{
    public int Result => Op switch { '+' => A + B, '-' => A - B, '*' => A * B, _ => throw new InvalidOperationException($"unknown operation '{Op}'") };

    /// <summary>True for the ~10% of problems reserved for the test split (same for every seed and phrasing).</summary>
    public bool IsTest
    {
        get
        {
            var (x, y) = Op == '-' ? (A, B) : (Math.Min(A, B), Math.Max(A, B));
            return StableHash.Mix(((ulong)Op << 32) ^ ((ulong)x << 16) ^ (ulong)y ^ 0xA11CE) % 10 == 0;
        }
    }

    public override string ToString() => $"{A} {Op} {B} = {Result}";
}

public static partial class ArithmeticTask
{
    /// <summary>Phrasings per operation; {a} and {b} are the operands. The scorer reads problems back with these.</summary>
    internal static readonly (char Op, string Template)[] Phrasings =
    [
        ('+', "What is {a} + {b}?"),
        ('+', "What is {a} plus {b}?"),
        ('+', "What is the sum of {a} and {b}?"),
        ('+', "Sam has {a} apples and gets {b} more. How many apples does Sam have now?"),
        ('-', "What is {a} - {b}?"),
        ('-', "What is {a} minus {b}?"),
        ('-', "Sam has {a} apples and gives {b} away. How many apples are left?"),
        ('*', "What is {a} * {b}?"),
        ('*', "What is {a} times {b}?"),
        ('*', "There are {a} boxes with {b} pens in each box. How many pens are there?"),
    ];

    private static readonly Regex[] Patterns = Phrasings
        .Select(p => new Regex(Regex.Escape(p.Template).Replace(@"\{a}", @"(\d+)").Replace(@"\{b}", @"(\d+)"), RegexOptions.CultureInvariant))
        .ToArray();

    /// <summary>The question text of <paramref name="problem"/> in phrasing <paramref name="phrasing"/> (an index
    /// among the phrasings of its operation).</summary>
    public static string Question(ArithmeticProblem problem, int phrasing = 0)
    {
        var options = Phrasings.Where(p => p.Op == problem.Op).ToList();
        return options[phrasing % options.Count].Template.Replace("{a}", problem.A.ToString()).Replace("{b}", problem.B.ToString());
    }

    /// <summary>Reads the problem out of a prompt (the question, or a formatted prompt containing it).</summary>
    public static bool TryParse(string prompt, out ArithmeticProblem problem)
    {
        for (int i = 0; i < Patterns.Length; i++)
        {
            var m = Patterns[i].Match(prompt);
            if (m.Success && int.TryParse(m.Groups[1].Value, out var a) && int.TryParse(m.Groups[2].Value, out var b))
            {
                problem = new ArithmeticProblem(a, Phrasings[i].Op, b);
                return true;
            }
        }
        problem = null!;
        return false;
    }

    /// <summary>An endless, seeded stream of (problem, question) from the train or the test split.</summary>
    public static IEnumerable<(ArithmeticProblem Problem, string Question)> Draw(Random rng, bool test)
    {
        while (true)
        {
            double op = rng.NextDouble();
            ArithmeticProblem p;
            if (op < 0.4) p = new ArithmeticProblem(rng.Next(100), '+', rng.Next(100));
            else if (op < 0.8)
            {
                int a = rng.Next(100);
                p = new ArithmeticProblem(a, '-', rng.Next(a + 1));
            }
            else
            {
                int a = rng.Next(2, 10), b = rng.Next(2, 20);
                p = rng.Next(2) == 0 ? new ArithmeticProblem(a, '*', b) : new ArithmeticProblem(b, '*', a);
            }
            int phrasing = rng.Next(Phrasings.Count(x => x.Op == p.Op));
            if (p.IsTest == test) yield return (p, Question(p, phrasing));
        }
    }

    /// <summary>A correct answer as the SFT data writes it.</summary>
    public static string CleanAnswer(int result) => result.ToString();
}

/// <summary>The true score of an answer to a built-in arithmetic question, used to measure whether RLHF helped.
/// <list type="bullet">
/// <item>1.0: the first number in the completion is the result and nothing else is said (the bare number,
/// optionally "The answer is" before it and a full stop after it).</item>
/// <item>0.5: the first number is the result but other text comes with it (rambling, a new question).</item>
/// <item>0.0: the first number is wrong (off by one included: no partial credit).</item>
/// <item>-1.0: no number at all (empty, "I do not know").</item>
/// </list></summary>
public static partial class ArithmeticScorer
{
    public const double Correct = 1.0;
    public const double CorrectWithExtraText = 0.5;
    public const double Wrong = 0.0;
    public const double Missing = -1.0;

    public static double Score(string prompt, string completion)
    {
        int result = Problem(prompt).Result;
        var first = FirstNumber().Match(completion);
        if (!first.Success) return Missing;
        if (!long.TryParse(first.Value, out var answer) || answer != result) return Wrong;
        return CleanAnswer().IsMatch(completion) ? Correct : CorrectWithExtraText;
    }

    /// <summary>Whether the first number in the completion is the result (accuracy, whatever else is said).</summary>
    public static bool IsCorrect(string prompt, string completion)
    {
        var first = FirstNumber().Match(completion);
        return first.Success && long.TryParse(first.Value, out var answer) && answer == Problem(prompt).Result;
    }

    private static ArithmeticProblem Problem(string prompt) =>
        ArithmeticTask.TryParse(prompt, out var problem) ? problem
        : throw new ArgumentException($"not a built-in arithmetic question: \"{(prompt.Length > 80 ? prompt[..80] + "..." : prompt)}\"", nameof(prompt));

    [GeneratedRegex(@"-?\d+")]
    private static partial Regex FirstNumber();

    [GeneratedRegex(@"^\s*(?:The answer is\s+)?-?\d+\s*\.?\s*$")]
    private static partial Regex CleanAnswer();
}
