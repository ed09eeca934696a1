#!/usr/bin/env python
"""Serving many generation streams, three ways, in one run: chapter 8's `BatchEngine` with one slot (one request at a
time), with static batching (16 slots; a batch runs until its longest reply ends) and with continuous batching (16
slots; requests join and leave between steps). The same requests for each: `--streams` closed-loop clients, each
sending its next request when its reply has ended (`replay`), prompts of 16 to 128 tokens and replies of 16 to 256
tokens, log-uniform (`mixed_requests`). Checks that the three give every request the same greedy tokens, prints tokens/s
and time to first token p50 / p99 for each, and ends with one JSON line with `continuous_vs_static` and
`continuous_vs_one_at_a_time` (tokens/s ratios).

    python bench/generation_serving.py [--requests 256] [--streams 16] [--layers 4] [--width 256] [--threads N]

The model: chapter 3's `GPT`, Llama block (RoPE, RMSNorm, SwiGLU), 4 layers x 256 wide, 512 positions, 65 tokens,
random weights: speed does not depend on them, and the replies run to their budget (no end token is sampled as one).
"""

import argparse, json

import torch

from llmstart.deployment import BatchEngine, mixed_requests, replay
from llmstart.transformer import GPT, GPTConfig


def compare(model, requests, streams: int = 16, same_tokens: bool = True) -> dict:
    """`replay` the same `requests` against one slot, static batching and continuous batching (`streams` slots each);
    checks all three give the same tokens (`same_tokens`; in bf16 on a GPU, batch sizes round differently, so there
    the share of equal tokens is reported instead). Returns each one's figures and the two ratios."""
    replay(BatchEngine(model, slots=streams), requests[:streams], streams)  # warm-up
    engines = {
        "one_at_a_time": BatchEngine(model, slots=1),
        "static": BatchEngine(model, slots=streams, policy="static"),
        "continuous": BatchEngine(model, slots=streams),
    }
    results, tokens = {}, None
    for name, engine in engines.items():
        r = replay(engine, requests, streams)
        got = [j.tokens for j in r.pop("jobs")]
        assert not same_tokens or tokens is None or got == tokens, f"{name} gave other tokens than one at a time"
        if tokens is not None:
            pairs = [(a, b) for x, y in zip(got, tokens) for a, b in zip(x, y)]
            agree = sum(a == b for a, b in pairs) / max(len(pairs), 1)
        tokens = tokens or got
        results[name] = {k: round(float(v), 1) for k, v in r.items()}
        if name != "one_at_a_time":
            results[name]["tokens_as_one_at_a_time"] = round(agree, 4)
        print(
            f"{name:>14}: {r['tokens_per_s']:7.0f} tokens/s, time to first token p50 {r['ttft_p50_ms']:7.0f} ms "
            f"/ p99 {r['ttft_p99_ms']:7.0f} ms, {r['steps']} steps in {r['seconds']:.1f} s",
            flush=True,
        )
    cont = results["continuous"]["tokens_per_s"]
    return {
        "new_tokens": sum(len(t) for t in tokens),
        **results,
        "continuous_vs_static": round(cont / results["static"]["tokens_per_s"], 2),
        "continuous_vs_one_at_a_time": round(cont / results["one_at_a_time"]["tokens_per_s"], 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=65,
        block_size=512,
        n_layer=args.layers,
        n_head=args.width // 64,
        n_embd=args.width,
        position="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=False,
    )
    model = GPT(config).eval()
    results = compare(model, mixed_requests(args.requests, config.vocab_size), args.streams)
    print("same tokens from all three: True")
    print(
        json.dumps(
            {
                "bench": "generation_serving",
                "model": f"GPT {args.layers} x {args.width} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)",
                "requests": args.requests,
                "streams": args.streams,
                "threads": torch.get_num_threads(),
                **results,
            }
        )
    )
