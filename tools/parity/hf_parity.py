#!/usr/bin/env python3
"""Numeric parity of RlhfStudio's models with Hugging Face transformers (fp32).

    check    builds tiny random checkpoints with transformers itself (its own init, naming and
             save_pretrained), runs transformers' forward and ours on the same token ids and compares.
    compare  the same comparison for existing model folders, e.g. folders saved by our engine
             (ModelSaver.Save) to check that transformers loads them and computes the same logits.

"Ours" is an external command (a template), so the check runs against whatever binary is under test:
    --ours         causal LM logits; placeholders {dir} and {ids} (comma separated); prints JSON
                   {"ids": [...], "logits": [[...vocab...] per position]}
    --ours-scores  score model (sequence classification); placeholders {dir}, {ids} and {mask} (rows
                   joined by ';', values by ','), {pad}; prints JSON {"scores": B x T x labels,
                   "pooled": B x labels} (pooled at each row's last non-pad token)
transformers is imported from $TRANSFORMERS_SRC (the src/ folder of a checkout) if set, else from the
Python path. Standard library + torch + numpy only. See README.md next to this file.
"""
import argparse
import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OURS = "dotnet run --project src/RlhfStudio.Cli -- model logits {dir} --ids {ids}"
TOLERANCE = 1e-4

if os.environ.get("TRANSFORMERS_SRC"):
    sys.path.insert(0, os.environ["TRANSFORMERS_SRC"])
import transformers  # noqa: E402  (path set just above)

VOCAB = 256
# initializer_range 0.1 (HF default 0.02) makes attention peaky and logits O(1): with 0.02 a dropped llama3 rope
# scaling moved the logits by only 3.5e-3, with 0.1 by 1.25 (while the correct model stays within 2e-6).
INIT = 0.1
SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, initializer_range=INIT)

# Tiny random checkpoints covering what the engine claims to load. Each: name -> (config class, model class, config).
CASES = {
    "llama-mha-untied": ("LlamaConfig", "LlamaForCausalLM",
                         dict(SMALL, vocab_size=VOCAB, num_key_value_heads=4, tie_word_embeddings=False)),
    "llama-gqa-tied": ("LlamaConfig", "LlamaForCausalLM",
                       dict(SMALL, vocab_size=VOCAB, num_key_value_heads=2, tie_word_embeddings=True)),
    # original_max_position_embeddings 64 with head_dim 16 and theta 5e5 puts rotary frequencies in all three
    # llama3 bands (kept, smoothly interpolated, divided by factor).
    "llama3-rope-gqa": ("LlamaConfig", "LlamaForCausalLM",
                        dict(SMALL, vocab_size=VOCAB, num_key_value_heads=2, tie_word_embeddings=True,
                             rope_theta=500000.0, max_position_embeddings=512,
                             rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                               high_freq_factor=4.0, original_max_position_embeddings=64))),
    "llama-attention-bias": ("LlamaConfig", "LlamaForCausalLM",
                             dict(SMALL, vocab_size=VOCAB, num_key_value_heads=2, attention_bias=True,
                                  mlp_bias=True, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(SMALL, vocab_size=VOCAB, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=1e6)),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(SMALL, vocab_size=VOCAB, num_key_value_heads=2, sliding_window=4096, tie_word_embeddings=False)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128, initializer_range=INIT)),
    "llama-seqcls-gqa": ("LlamaConfig", "LlamaForSequenceClassification",
                         dict(SMALL, vocab_size=VOCAB, num_key_value_heads=2, num_labels=2, pad_token_id=0)),
}


def perturb_(model, seed):
    """transformers initialises biases to 0 and norm weights to 1, which would hide a missing bias or norm weight;
    give them random values (seeded) so that every parameter takes part in the comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name or ".ln_" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))


def build_case(name, folder, seed):
    config_cls, model_cls, kwargs = CASES[name]
    config = getattr(transformers, config_cls)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).to(torch.float32).eval()
    perturb_(model, seed)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def run_ours(template, **values):
    cmd = [part.format(**values) for part in shlex.split(template)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}")
    # Build chatter may precede the JSON: take the last line that parses.
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.lstrip().startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{' '.join(cmd)} printed no JSON object:\n{proc.stdout[-2000:]}")


def differences(ours, ref):
    """Max absolute difference, and max relative difference |ours - ref| / |ref| over entries whose |ref| is at
    least 1% of the largest |ref| (relative error of near-zero entries says nothing)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        raise RuntimeError(f"shape mismatch: ours {ours.shape}, transformers {ref.shape}")
    diff = np.abs(ours - ref)
    scale = np.abs(ref)
    big = scale >= 0.01 * scale.max()
    return float(diff.max()), float((diff[big] / scale[big]).max()), float(scale.max())


def hf_model(folder):
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, config.architectures[0])
    model, info = cls.from_pretrained(folder, torch_dtype=torch.float32, output_loading_info=True)
    # from_pretrained only warns about missing or unexpected weights (and initialises the missing ones at random):
    # for a parity check that is a failure, named here rather than showing up as a numeric difference.
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise RuntimeError(f"{folder}: transformers did not load every weight cleanly: {problems}")
    return model.eval()


def compare_causal(folder, args, rng):
    model = hf_model(folder)
    ids = [rng.randrange(model.config.vocab_size) for _ in range(args.length)]
    with torch.no_grad():
        ref = model(torch.tensor([ids]), use_cache=False).logits[0].numpy()
    ours = run_ours(args.ours, dir=folder, ids=",".join(map(str, ids)))
    return {"logits": differences(ours["logits"], ref)}


def compare_scores(folder, args, rng):
    """A batch with a full row, a left-padded and a right-padded row (pad = config.pad_token_id)."""
    model = hf_model(folder)
    pad = model.config.pad_token_id
    if pad is None:
        raise RuntimeError(f"{folder}: the classification check needs pad_token_id in config.json")
    t = args.length
    real = [tok for tok in range(model.config.vocab_size) if tok != pad]
    rows, masks = [], []
    for n_pad, left in ((0, True), (7, True), (5, False)):
        tokens = [rng.choice(real) for _ in range(t - n_pad)]
        rows.append([pad] * n_pad + tokens if left else tokens + [pad] * n_pad)
        masks.append([0] * n_pad + [1] * (t - n_pad) if left else [1] * (t - n_pad) + [0] * n_pad)
    ids, mask = torch.tensor(rows), torch.tensor(masks)
    # Positions that skip left padding, as transformers' generate() uses and as our engine does by default.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)[0]
        per_token = model.score(hidden).numpy()
        pooled = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits.numpy()
        # What transformers computes when no position ids are given (as TRL's RewardTrainer calls it): left-padded
        # rows then start at position 7, which rotary embeddings make (nearly) irrelevant.
        pooled_default = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
    ours = run_ours(args.ours_scores, dir=folder, pad=pad,
                    ids=";".join(",".join(map(str, r)) for r in rows), mask=";".join(",".join(map(str, m)) for m in masks))
    ours_scores = np.asarray(ours["scores"])
    real_positions = mask.numpy().astype(bool)
    return {
        "per-token scores (real tokens)": differences(ours_scores[real_positions], per_token[real_positions]),
        "pooled": differences(ours["pooled"], pooled),
        "pooled vs HF default positions": differences(ours["pooled"], pooled_default),
    }


def compare_folder(folder, args, rng):
    arch = json.loads((Path(folder) / "config.json").read_text())["architectures"][0]
    if arch.endswith("ForSequenceClassification"):
        if not args.ours_scores:
            return None
        return compare_scores(folder, args, rng)
    return compare_causal(folder, args, rng)


def report(label, results):
    worst = 0.0
    if results is None:
        print(f"{label:28s} skipped: no --ours-scores command given")
        return worst
    for what, (abs_diff, rel_diff, scale) in results.items():
        worst = max(worst, abs_diff)
        verdict = "ok" if abs_diff <= TOLERANCE else "FAIL"
        print(f"{label:28s} {what:32s} max|diff| {abs_diff:.2e}  max rel {rel_diff:.2e}  (max|ref| {scale:.3g})  {verdict}")
    return worst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="build tiny HF checkpoints and compare every architecture")
    check.add_argument("--work", required=True, help="folder for the generated checkpoints")
    check.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    compare = sub.add_parser("compare", help="compare existing model folders (e.g. saved by our engine)")
    compare.add_argument("folders", nargs="+")
    for q in (check, compare):
        q.add_argument("--ours", default=DEFAULT_OURS, help=f"causal LM logits command (default: {DEFAULT_OURS})")
        q.add_argument("--ours-scores", help="score model command; without it, classification folders are skipped")
        q.add_argument("--length", type=int, default=24, help="tokens per sequence")
        q.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()

    torch.set_grad_enabled(False)
    rng = random.Random(args.seed)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, tolerance {TOLERANCE:g} (fp32)")
    worst = 0.0
    if args.command == "check":
        for i, name in enumerate(args.cases):
            folder = build_case(name, str(Path(args.work) / name), args.seed + i)
            worst = max(worst, report(name, compare_folder(folder, args, rng)))
    else:
        for folder in args.folders:
            worst = max(worst, report(Path(folder).name, compare_folder(folder, args, rng)))
    print("PASS" if worst <= TOLERANCE else f"FAIL: worst max|diff| {worst:.2e} > {TOLERANCE:g}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
