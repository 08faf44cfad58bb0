#!/usr/bin/python3
"""The PyTorch side of the RlhfStudio benchmark: the same workloads as bench/RlhfStudio.Bench, with identical shapes
and dtypes, in plain PyTorch 1.13 (Debian's python3-torch), given its best: 2 threads, OpenBLAS with its own core
detection (the C# runner removes OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from this process's environment), bf16 training
through torch.autocast("cpu", bfloat16) with fp32 master weights, bf16 generation on a bf16 copy of the model, a
preallocated KV cache, rotary tables computed once, fused q/k/v and gate/up projections.

One workload per process (so its peak RSS is its own):  /usr/bin/python3 bench.py --workload train-tiny-bf16 [--quick]
It prints one line "RESULT {json}" in the shape of the C# Measurement record. Run through
`dotnet run -c Release --project bench/RlhfStudio.Bench`, which runs both sides and prints the ratios.
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 8192
CONFIGS = {
    # name: (hidden, layers, heads, intermediate, train batch, seq len); kv heads = heads, head dim 64 / 64
    "tiny": dict(hidden=256, layers=4, heads=4, intermediate=688, batch=8, seq=256),
    "25M": dict(hidden=512, layers=8, heads=8, intermediate=1376, batch=4, seq=256),
}
GEN_BATCH, PROMPT, NEW_TOKENS = 8, 32, 128
REWARD_PAIRS, REWARD_LEN = 8, 256
DPO_PAIRS, DPO_PROMPT, DPO_COMPLETION, DPO_BETA = 8, 128, 128, 0.1
PPO_BATCH, PPO_EPOCHS, PPO_KL_COEF, PPO_CLIP, PPO_VF_COEF, PPO_LR = 8, 4, 0.05, 0.2, 0.1, 1e-5
MATMUL_SIZE = 2048
STEP_WARMUPS = 5   # untimed training/reward/DPO steps, both sides (Timing.StepWarmups in the C# runner)


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm: statistics in fp32, cast back, times the weight."""

    def __init__(self, size, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv_proj = nn.Linear(hidden, 3 * hidden, bias=False)   # fused q/k/v: one matmul instead of three
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x, cos, sin, mask, cache=None, past=0):
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)   # (3, B, nh, T, hs)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            cache[0][:, :, past:past + t] = k
            cache[1][:, :, past:past + t] = v
            k, v = cache[0][:, :, :past + t], cache[1][:, :, :past + t]
        # PyTorch 1.13 has no scaled_dot_product_attention: the manual softmax attention, softmax in fp32.
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        y = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(y)


class Mlp(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.intermediate = intermediate
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)   # fused gate/up
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, hidden, heads, intermediate):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden)
        self.self_attn = Attention(hidden, heads)
        self.post_attention_layernorm = RMSNorm(hidden)
        self.mlp = Mlp(hidden, intermediate)

    def forward(self, x, cos, sin, mask, cache=None, past=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, past)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """A Llama-family causal LM with tied embeddings, as the engine's presets."""

    def __init__(self, hidden, layers, heads, intermediate, max_positions=2048, theta=10000.0, **_):
        super().__init__()
        self.hidden, self.heads, self.head_dim = hidden, heads, hidden // heads
        self.embed_tokens = nn.Embedding(VOCAB, hidden)
        self.layers = nn.ModuleList(Layer(hidden, heads, intermediate) for _ in range(layers))
        self.norm = RMSNorm(hidden)
        for name, p in self.named_parameters():   # transformers' init: N(0, 0.02) for matrices, ones for norms
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)
        inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        freqs = torch.outer(torch.arange(max_positions).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_table", emb.cos(), persistent=False)   # computed once, indexed per call
        self.register_buffer("sin_table", emb.sin(), persistent=False)
        self.register_buffer("causal", torch.ones(max_positions, max_positions, dtype=torch.bool).triu(1), persistent=False)

    def hidden_states(self, ids, cache=None, past=0):
        b, t = ids.shape
        x = self.embed_tokens(ids)
        cos = self.cos_table[past:past + t].to(x.dtype)
        sin = self.sin_table[past:past + t].to(x.dtype)
        mask = self.causal[past:past + t, :past + t] if t > 1 else None
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, None if cache is None else cache[i], past)
        return self.norm(x)

    def logits(self, h):
        return F.linear(h, self.embed_tokens.weight)

    def forward(self, ids):
        return self.logits(self.hidden_states(ids))


class ScoreModel(Llama):
    def __init__(self, **config):
        super().__init__(**config)
        self.score = nn.Linear(self.hidden, 1, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    def forward(self, ids):
        return self.score(self.hidden_states(ids))


def adamw(model, lr):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() <= 1]
    # foreach=True is faster than the single-tensor default on this CPU for these parameter counts.
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, foreach=True)


def autocast(dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")


def timed(work, warmups, repetitions):
    for _ in range(warmups):
        work()
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repetitions):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    return times, cpu / (time.perf_counter() - wall0), cpu / repetitions


def rate(wid, unit, units, run, flops=None, notes=None):
    times, share, cpu = run
    best, median = min(times), statistics.median_low(times)
    return dict(id=wid, unit=unit, best=units / best, median=units / median, repetitions=len(times), millisecondsBest=best * 1000,
                flopsPerIteration=flops, notes=notes, cpuShare=share, cpuMilliseconds=cpu * 1000)


def non_embedding(model):
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)


def forward_flops(c, n_non_embedding, tokens, context, lm_head=True):
    return tokens * (2.0 * n_non_embedding + (2.0 * VOCAB * c["hidden"] if lm_head else 0) + 4.0 * c["layers"] * c["hidden"] * context)


def matmul(wid, dtype, reps):
    g = torch.Generator().manual_seed(1234)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=g).to(dt)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=g).to(dt)
    calls = 4
    run = timed(lambda: [torch.mm(a, b) for _ in range(calls)], 1, reps)
    m = rate(wid, "GFLOP/s", 2.0 * MATMUL_SIZE ** 3 * calls / 1e9, run, notes=f"{MATMUL_SIZE}^3 torch.mm")
    m["millisecondsBest"] /= calls
    return m


def train(wid, c, dtype, reps):
    torch.manual_seed(1)
    model = Llama(**c)
    opt = adamw(model, 1e-4)
    g = torch.Generator().manual_seed(11)
    batches = [torch.randint(0, VOCAB, (c["batch"], c["seq"] + 1), generator=g) for _ in range(4)]
    state = dict(i=0, loss=0.0)

    def step():
        ids = batches[state["i"] % len(batches)]
        state["i"] += 1
        with autocast(dtype):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, VOCAB), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"] = loss.item()

    run = timed(step, STEP_WARMUPS, reps)
    tokens = c["batch"] * c["seq"]
    flops = 3 * forward_flops(c, non_embedding(model), tokens, c["seq"])
    return rate(wid, "tokens/s", tokens, run, flops, f"{c['batch']}x{c['seq']}, loss {state['loss']:.3f}")


def kv_cache(model, b, total, dt):
    """A preallocated (key, value) cache per layer for b rows of total positions."""
    return [(torch.zeros(b, model.heads, total, model.head_dim, dtype=dt), torch.zeros(b, model.heads, total, model.head_dim, dtype=dt))
            for _ in model.layers]


def draw(probs, g):
    """One uniform per row, inverse CDF: the engine's sampler (cheaper than multinomial on CPU)."""
    cdf = probs.cumsum(-1)
    u = (1 - torch.rand(probs.shape[0], 1, generator=g)) * cdf[:, -1:]
    return (cdf < u).sum(-1).clamp_max(probs.shape[-1] - 1)


@torch.inference_mode()
def generate_once(model, ids, dtype, g):
    b = ids.shape[0]
    cache = kv_cache(model, b, ids.shape[1] + NEW_TOKENS, torch.bfloat16 if dtype == "bf16" else torch.float32)
    out = torch.empty(b, NEW_TOKENS, dtype=torch.long)
    h = model.hidden_states(ids, cache, 0)
    past = ids.shape[1]
    for step in range(NEW_TOKENS):
        logits = model.logits(h[:, -1]).float()                    # (B, V)
        token = draw(torch.softmax(logits, dim=-1), g)
        out[:, step] = token
        if step == NEW_TOKENS - 1:
            break
        h = model.hidden_states(token.unsqueeze(1), cache, past)
        past += 1
    return out


def generate(wid, c, dtype, reps):
    torch.manual_seed(1)
    model = Llama(**c).eval()
    if dtype == "bf16":
        model = model.to(torch.bfloat16)   # inference: a bf16 copy beats autocast's per-call weight casts
    ids = torch.randint(0, VOCAB, (GEN_BATCH, PROMPT), generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(3)
    run = timed(lambda: generate_once(model, ids, dtype, g), 1, reps)
    tokens = GEN_BATCH * NEW_TOKENS
    n = non_embedding(model)
    flops = forward_flops(c, n, tokens, PROMPT + NEW_TOKENS / 2) + forward_flops(c, n, GEN_BATCH * PROMPT, PROMPT, lm_head=False)
    return rate(wid, "tokens/s", tokens, run, flops, f"{GEN_BATCH}x({PROMPT}+{NEW_TOKENS}), {min(run[0]) * 1000 / NEW_TOKENS:.1f} ms/step")


def reward(wid, c, dtype, reps):
    torch.manual_seed(1)
    model = ScoreModel(**c)
    opt = adamw(model, 1e-5)
    ids = torch.randint(0, VOCAB, (2 * REWARD_PAIRS, REWARD_LEN), generator=torch.Generator().manual_seed(13))
    state = dict(loss=0.0)

    def step():
        with autocast(dtype):
            scores = model(ids)
        rewards = scores[:, -1, 0].float()
        loss = -F.logsigmoid(rewards[:REWARD_PAIRS] - rewards[REWARD_PAIRS:]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"] = loss.item()

    run = timed(step, STEP_WARMUPS, reps)
    tokens = 2 * REWARD_PAIRS * REWARD_LEN
    flops = tokens * (6.0 * non_embedding(model) + 12.0 * c["layers"] * c["hidden"] * REWARD_LEN)
    return rate(wid, "tokens/s", tokens, run, flops, f"{REWARD_PAIRS} pairs x {REWARD_LEN}, loss {state['loss']:.3f}")


def dpo(wid, c, dtype, reps):
    torch.manual_seed(1)
    policy = Llama(**c)
    reference = Llama(**c)
    reference.load_state_dict(policy.state_dict())
    reference.requires_grad_(False)
    opt = adamw(policy, 1e-6)
    length = DPO_PROMPT + DPO_COMPLETION
    ids = torch.randint(0, VOCAB, (2 * DPO_PAIRS, length), generator=torch.Generator().manual_seed(17))
    inputs, targets = ids[:, :-1], ids[:, 1:].unsqueeze(-1)
    completion = (torch.arange(length - 1) >= DPO_PROMPT - 1).float().unsqueeze(0)
    state = dict(loss=0.0)

    def logps(model):
        with autocast(dtype):
            logits = model(inputs)
        lp = logits.float().log_softmax(-1).gather(-1, targets).squeeze(-1)
        return (lp * completion).sum(-1)

    def step():
        with torch.no_grad():
            ref = logps(reference)
        pol = logps(policy)
        p = DPO_PAIRS
        margin = (pol[:p] - ref[:p]) - (pol[p:] - ref[p:])
        loss = -F.logsigmoid(DPO_BETA * margin).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"] = loss.item()

    run = timed(step, STEP_WARMUPS, reps)
    tokens = 2 * DPO_PAIRS * (length - 1)
    flops = 4 * forward_flops(c, non_embedding(policy), tokens, length - 1)
    return rate(wid, "tokens/s", tokens, run, flops, f"{DPO_PAIRS} pairs x ({DPO_PROMPT}+{DPO_COMPLETION}), policy+reference, loss {state['loss']:.4f}")


class ValueHeadLlama(Llama):
    """TRL's AutoModelForCausalLMWithValueHead: a scalar head on the final hidden states of the policy's trunk."""
    def __init__(self, **config):
        super().__init__(**config)
        self.v_head = nn.Linear(self.hidden, 1)
        nn.init.normal_(self.v_head.weight, std=0.02)
        nn.init.zeros_(self.v_head.bias)


@torch.inference_mode()
def ppo_sample(model, ids, g):
    """Sampling with a KV cache on the bf16 copy, keeping each sampled token's log-probability and the value of the state
    it was sampled from (the sampling loop's outputs, as TRL's batch_generation keeps its logits): no policy forward later."""
    b, p = ids.shape
    cache = kv_cache(model, b, p + NEW_TOKENS, torch.bfloat16)
    tokens = torch.empty(b, NEW_TOKENS, dtype=torch.long)
    logprobs = torch.empty(b, NEW_TOKENS)
    values = torch.empty(b, NEW_TOKENS)
    h = model.hidden_states(ids, cache, 0)
    past = p
    for step in range(NEW_TOKENS):
        last = h[:, -1]
        lp = model.logits(last).float().log_softmax(-1)            # temperature 1
        values[:, step] = model.v_head(last).float().squeeze(-1)
        token = draw(lp.exp(), g)
        tokens[:, step] = token
        logprobs[:, step] = lp.gather(-1, token.unsqueeze(-1)).squeeze(-1)
        if step == NEW_TOKENS - 1:
            break
        h = model.hidden_states(token.unsqueeze(1), cache, past)
        past += 1
    return tokens, logprobs, values


def response_logprobs(model, seq, p):
    """Log-probabilities (B, N) of the response tokens, and the predicting hidden states (B, N, C)."""
    h = model.hidden_states(seq)[:, p - 1:-1]
    lp = model.logits(h).float().log_softmax(-1).gather(-1, seq[:, p:].unsqueeze(-1)).squeeze(-1)
    return lp, h


def ppo(wid, c, dtype, reps, prompt_tokens):
    """One PPO step as TRL's PPOTrainer with a value head on the policy (AutoModelForCausalLMWithValueHead), given its
    cheapest route: log-probs and values from the sampling loop, a bf16 reference copy made once, a bf16 sampling copy
    refreshed in place each step, fp32 master weights trained under bf16 autocast. Phases as ours: rollout (refreshing
    the sampling copy and the sampling loop), reference pass, scoring (a random score: the arithmetic check on our side
    is as cheap); optimise = KL-shaped rewards, GAE and whitening, then 4 epochs of one minibatch of 8: clipped policy
    loss, clipped value loss, grad clip 1.0, AdamW."""
    if dtype != "bf16":
        raise SystemExit("ppo is measured in bf16 only")
    torch.manual_seed(1)
    policy = ValueHeadLlama(**c)
    sampler = ValueHeadLlama(**c).to(torch.bfloat16).eval()
    reference = Llama(**c)
    reference.load_state_dict({k: v for k, v in policy.state_dict().items() if not k.startswith("v_head")})
    reference = reference.to(torch.bfloat16).eval()
    opt = adamw(policy, PPO_LR)
    g = torch.Generator().manual_seed(5)
    prompts = torch.randint(0, VOCAB, (PPO_BATCH, prompt_tokens), generator=torch.Generator().manual_seed(19))
    p = prompt_tokens
    timings = dict(rollout=[], reference=[], experience=[], optimise=[])

    def step():
        t0 = time.perf_counter()
        with torch.no_grad():
            for ps, pp in zip(sampler.parameters(), policy.parameters()):
                ps.copy_(pp)
        tokens, logprobs, values = ppo_sample(sampler, prompts, g)
        t2 = time.perf_counter()
        seq = torch.cat([prompts, tokens], 1)
        with torch.inference_mode():
            ref_logprobs, _ = response_logprobs(reference, seq, p)
        tr = time.perf_counter()
        score = torch.randn(PPO_BATCH, generator=g)
        te = time.perf_counter()
        kl = logprobs - ref_logprobs
        rewards = -PPO_KL_COEF * kl
        rewards[:, -1] += score
        advantages_reversed, last = [], 0.0
        for t in reversed(range(NEW_TOKENS)):                         # TRL's GAE loop, gamma 1, lambda 0.95
            next_value = values[:, t + 1] if t < NEW_TOKENS - 1 else 0.0
            delta = rewards[:, t] + next_value - values[:, t]
            last = delta + 0.95 * last
            advantages_reversed.append(last)
        advantages = torch.stack(advantages_reversed[::-1], 1)
        returns = advantages + values
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        for _ in range(PPO_EPOCHS):
            with autocast(dtype):
                new_logprobs, h = response_logprobs(policy, seq, p)
                vpred = policy.v_head(h).float().squeeze(-1)
            vclipped = values + (vpred - values).clamp(-PPO_CLIP, PPO_CLIP)
            vf_loss = 0.5 * torch.max((vpred - returns) ** 2, (vclipped - returns) ** 2).mean()
            ratio = (new_logprobs - logprobs).exp()
            pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - PPO_CLIP, 1 + PPO_CLIP)).mean()
            loss = pg_loss + PPO_VF_COEF * vf_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        timings["rollout"].append(t2 - t0)
        timings["reference"].append(tr - t2)
        timings["experience"].append(te - t0)
        timings["optimise"].append(t4 - te)

    run = timed(step, 1, reps)
    times = run[0]
    best = min(times)
    result = rate(wid, "steps/min", 60.0, run, None,
                  f"batch {PPO_BATCH}, prompt {p} + {NEW_TOKENS} new tokens, {PPO_EPOCHS} epochs, value head on the policy")
    timed_from = len(timings["rollout"]) - len(times)
    rollout, reference, experience, optimise = (timings[k][timed_from:] for k in ("rollout", "reference", "experience", "optimise"))
    result["phases"] = {
        "step (best)": best * 1000,
        "rollout: refreshing the sampling copy and the sampling loop (best)": min(rollout) * 1000,
        "  reference pass (best)": min(reference) * 1000,
        "optimise: advantages and 4 PPO epochs (best)": min(optimise) * 1000,
        "experience (rollout + reference + scoring) / its rollout phase, same step (best, x1000)": min(e / r for e, r in zip(experience, rollout)) * 1000,
    }
    return result


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, help="e.g. matmul-bf16, train-tiny-fp32, generate-25M-bf16, reward-tiny-fp32, dpo-tiny-bf16, ppo-tiny-bf16")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT, help="ppo: the prompt length (ours reports its own)")
    args = parser.parse_args()
    # Debian's build defaults to 1 thread here; BENCH_THREADS=1 is for CPU-time comparisons on a loaded machine.
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    reps = 3 if args.quick else 6
    parts = args.workload.split("-")
    kind, dtype = parts[0], parts[-1]
    if dtype not in ("fp32", "bf16"):
        parser.error(f"unknown dtype in {args.workload}")
    if kind == "matmul":
        result = matmul(args.workload, dtype, reps)
    else:
        config = CONFIGS.get(parts[1])
        if config is None:
            parser.error(f"unknown config in {args.workload} ({', '.join(CONFIGS)})")
        work = {"train": train, "generate": generate, "reward": reward, "dpo": dpo}.get(kind)
        if kind == "ppo":
            result = ppo(args.workload, config, dtype, 3 if args.quick else 4, args.prompt_tokens)
        elif work is None:
            parser.error(f"unknown workload kind {kind}")
        else:
            result = work(args.workload, config, dtype, reps)
    result["peakRssMiB"] = peak_rss_mib()
    result["notes"] = (result.get("notes") or "") + f"; torch {torch.__version__}, {torch.get_num_threads()} threads"
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
