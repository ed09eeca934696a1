#!/usr/bin/env python
"""Chapter 3's `GPT` in training, eager and under `torch.compile`, in one run: tokens/s of AdamW steps on random tokens
(speed does not depend on the weights) and model FLOPs utilisation against this machine's measured matrix-product peak,
for GPT-2's block and the modern one (RoPE, RMSNorm, SwiGLU). On a GPU (what bench/gpu.py calls): GPT-2-small's size,
bf16 autocast, batches of 8 x 1,024. On a CPU: the shakespeare-char recipe's model (4 layers, 128 wide, batches of
12 x 64), float32. Compilation happens in the warm-up steps, whose time is reported apart.

    python bench/gpt_training.py [--steps 50]

The last line is one JSON object with each row and `compile_speedup` per block.
"""

import argparse, json, time


def gpt_training(device: str, peak: float, steps: int = 10) -> list[dict]:
    "Training tokens/s and MFU of chapter 3's GPT (GPT-2-small's size on a GPU, shakespeare-char's on a CPU), eager and compiled."
    import torch
    from llmstart.transformer import GPT, GPTConfig, flops_per_token

    big = device == "cuda"
    if big:
        sizes, vocab, batch = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024), 50304, 8
    else:
        sizes, vocab, batch = dict(n_layer=4, n_head=4, n_embd=128, block_size=64), 65, 12
    rows = []
    for block, choices in {"GPT-2": {}, "modern": dict(position="rope", norm="rmsnorm", mlp="swiglu")}.items():
        for compiled in (False, True):
            torch.manual_seed(0)
            config = GPTConfig(vocab_size=vocab, bias=False, **sizes, **choices)
            model = GPT(config).to(device).train()
            if compiled:
                model.compile()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=big)
            ids = torch.randint(0, config.vocab_size, (batch, config.block_size), device=device)
            dtype = torch.bfloat16 if big else torch.float32

            def step():
                with torch.autocast(device, dtype=dtype, enabled=big):
                    loss = model(ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            try:
                t0 = time.perf_counter()
                for _ in range(3):  # warm-up (and compilation)
                    step()
                warmup_s = time.perf_counter() - t0
                sync = torch.cuda.synchronize if big else (lambda: None)
                sync()
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                sync()
            except Exception as e:  # a compile failure is a result too
                rows.append({"block": block, "compiled": compiled, "error": f"{type(e).__name__}: {e}"[:300]})
                continue
            tokens_per_s = steps * ids.numel() / (time.perf_counter() - t0)
            mfu = tokens_per_s * flops_per_token(config) / peak
            rows.append(
                {
                    "block": block,
                    "compiled": compiled,
                    "tokens_per_s": round(tokens_per_s),
                    "mfu": round(mfu, 4),
                    "warmup_s": round(warmup_s, 1),
                }
            )
            print(
                f"GPT {block}{' compiled' if compiled else ''}: {tokens_per_s:,.0f} tokens/s, MFU {mfu:.1%}", flush=True
            )
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    import torch

    from llmstart.transformer import matmul_peak

    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_peak(8192 if device == "cuda" else 1024, repeats=50, device=device)
    rows = gpt_training(device, peak, args.steps)
    speed = {(r["block"], r["compiled"]): r.get("tokens_per_s") for r in rows}
    speedup = {
        b: round(speed[b, True] / speed[b, False], 3) if speed.get((b, True)) else None for b in ("GPT-2", "modern")
    }
    print(
        json.dumps(
            {
                "bench": "gpt_training",
                "device": device,
                "peak_gflops": round(peak / 1e9),
                "rows": rows,
                "compile_speedup": speedup,
            }
        )
    )
