#!/usr/bin/env python
"""Speculative decoding against plain greedy decoding of the same target, in one run, on a draft / target pair this
script trains on Tiny Shakespeare at the character level (`../shared/data/tinyshakespeare.txt`; the bundled sample
corpus where it is missing): a target GPT (default 6 layers x 384 wide -- nanoGPT's Shakespeare model -- Llama block)
and a draft (1 layer x 64 wide),
each with chapter 4's `CausalLM` and the one recipe. Then, for prompts taken from the held-out tenth of the text, greedy
continuations of `--new-tokens` tokens by `GPT.generate` (KV cache) and by `speculative_generate` with k = 2, 3, 4 and 6
draft tokens a round. Checks that every speculative output equals the plain one, prints each k's acceptance rate and
tokens/s, and ends with one JSON line (`speedup`: the best k's tokens/s over plain decoding's).

    python bench/speculative.py [--target-layers 6] [--target-width 384] [--target-steps 600] [--draft-steps 2000]
                                [--prompts 16] [--new-tokens 80] [--threads N]
"""

import argparse, json, tempfile, time
from pathlib import Path

import torch

from llmstart.data import LanguageModelingDataModule, shared_file, sample_path
from llmstart.deployment import speculative_generate
from llmstart.embeddings import train_tokenizer
from llmstart.pretraining import CausalLM
from llmstart.training import fit, make_trainer


def train(text: str, tok, layers: int, width: int, steps: int, folder: Path) -> tuple:
    "A character GPT trained `steps` steps (blocks of 128, batch 16, lr 2e-3 cosine); its validation loss and seconds."
    model = CausalLM(
        tok,
        n_layer=layers,
        n_head=max(1, width // 64),
        n_embd=width,
        block_size=129,
        bias=False,
        position="rope",
        norm="rmsnorm",
        mlp="swiglu",
        scale_residual_init=False,
        lr=2e-3,
        warmup=min(100, steps // 10),
        min_lr_ratio=0.1,
        betas=(0.9, 0.99),
        weight_decay=0.1,
    )
    data = LanguageModelingDataModule(text, tokenizer=tok, by="file", block_size=129, batch_size=16)
    trainer = make_trainer(
        folder,
        max_steps=steps,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        limit_val_batches=40,
        num_sanity_val_steps=0,
        logger=False,
        progress_bar=False,
        enable_model_summary=False,
        monitor=None,
    )
    t0 = time.perf_counter()
    fit(trainer, model, data, resume=False)
    return model.model.eval(), float(trainer.callback_metrics["val_loss"]), time.perf_counter() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-layers", type=int, default=6)
    ap.add_argument("--target-width", type=int, default=384)
    ap.add_argument("--target-steps", type=int, default=600)
    ap.add_argument("--draft-layers", type=int, default=1)
    ap.add_argument("--draft-width", type=int, default=64)
    ap.add_argument("--draft-steps", type=int, default=2000)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=80, help="new tokens a prompt (48 tokens); together at most 129")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    text = str(shared_file("tinyshakespeare.txt") or sample_path("corpus"))
    raw = Path(text).read_text()
    tok = train_tokenizer([raw], "char", vocab_size=500)
    with tempfile.TemporaryDirectory(prefix="llmstart-bench-") as tmp:
        target, target_loss, target_s = train(
            text, tok, args.target_layers, args.target_width, args.target_steps, Path(tmp) / "t"
        )
        draft, draft_loss, draft_s = train(
            text, tok, args.draft_layers, args.draft_width, args.draft_steps, Path(tmp) / "d"
        )
    print(
        f"target {args.target_layers} x {args.target_width}: val loss {target_loss:.3f} after {args.target_steps} steps ({target_s:.0f} s)"
    )
    print(
        f"draft  {args.draft_layers} x {args.draft_width}: val loss {draft_loss:.3f} after {args.draft_steps} steps ({draft_s:.0f} s)"
    )
    held_out = raw[int(len(raw) * 0.9) :]
    step = len(held_out) // args.prompts
    prompts = [torch.tensor([tok(held_out[i * step : i * step + 48])["input_ids"]]) for i in range(args.prompts)]

    def timed(fn):
        t0 = time.perf_counter()
        outs = [fn(p) for p in prompts]
        return outs, args.new_tokens * len(prompts) / (time.perf_counter() - t0)

    timed(lambda p: target.generate(p, 20, temperature=0))  # warm-up
    plain, plain_rate = timed(lambda p: target.generate(p, args.new_tokens, temperature=0))
    print(f"plain greedy: {plain_rate:.0f} tokens/s")
    results = {}
    for k in (2, 3, 4, 6):
        outs, rate = timed(lambda p: speculative_generate(target, draft, p, args.new_tokens, k=k))
        assert all(torch.equal(o, want) for (o, _), want in zip(outs, plain)), f"k={k}: not the target's greedy output"
        drafted = sum(s["drafted"] for _, s in outs)
        acceptance = sum(s["accepted"] for _, s in outs) / drafted
        results[k] = {
            "acceptance": round(acceptance, 3),
            "tokens_per_s": round(rate, 1),
            "speedup": round(rate / plain_rate, 2),
        }
        print(
            f"k={k}: {acceptance:.0%} of draft tokens accepted, {rate:.0f} tokens/s, {rate / plain_rate:.2f}x (same tokens)"
        )
    best = max(results, key=lambda k: results[k]["tokens_per_s"])
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)
    print(
        json.dumps(
            {
                "bench": "speculative",
                "target": {
                    "layers": args.target_layers,
                    "width": args.target_width,
                    "parameters_M": count(target),
                    "val_loss": round(target_loss, 3),
                },
                "draft": {
                    "layers": args.draft_layers,
                    "width": args.draft_width,
                    "parameters_M": count(draft),
                    "val_loss": round(draft_loss, 3),
                },
                "new_tokens": args.new_tokens,
                "prompts": args.prompts,
                "threads": torch.get_num_threads(),
                "plain_tokens_per_s": round(plain_rate, 1),
                "by_k": results,
                "best_k": best,
                "speedup": results[best]["speedup"],
                "same_tokens": True,
            }
        )
    )
