#!/usr/bin/env python
"""Generation with and without the KV cache, in one run: greedy decoding of 256 new tokens after a 16-token prompt by
chapter 3's `GPT` (6 layers, 6 heads, 384 wide: nanoGPT's Shakespeare model; random weights, since speed does not
depend on them), `GPT.generate(..., use_cache=True)` against `use_cache=False`. Checks that both give the same tokens,
prints tokens/s of each (best of `--repeats`), and ends with one JSON line whose `speedup` is cached / uncached.

    python bench/kv_cache.py [--new-tokens 256] [--repeats 3] [--threads N]
"""

import argparse, json, time

import torch

from llmstart.transformer import GPT, GPTConfig


def tokens_per_second(model, prompt, new_tokens: int, use_cache: bool, repeats: int) -> tuple[float, torch.Tensor]:
    "Best tokens/s over `repeats` greedy generations, and the generated ids."
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.generate(prompt, new_tokens, use_cache=use_cache, temperature=0)
        best = max(best, new_tokens / (time.perf_counter() - t0))
    return best, out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=65, block_size=args.prompt_tokens + args.new_tokens, n_layer=6, n_head=6, n_embd=384, bias=False
    )
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt_tokens))
    cached, with_cache = tokens_per_second(model, prompt, args.new_tokens, True, args.repeats)
    uncached, without = tokens_per_second(model, prompt, args.new_tokens, False, args.repeats)
    same = torch.equal(with_cache, without)
    print(f"with the KV cache:    {cached:8.1f} tokens/s")
    print(f"without the KV cache: {uncached:8.1f} tokens/s")
    print(f"same tokens: {same}")
    print(
        json.dumps(
            {
                "bench": "kv_cache",
                "model": f"GPT 6 x 384 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)",
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens,
                "threads": torch.get_num_threads(),
                "cached_tokens_per_s": round(cached, 1),
                "uncached_tokens_per_s": round(uncached, 1),
                "speedup": round(cached / uncached, 2),
                "same_tokens": same,
            }
        )
    )
