#!/usr/bin/env python
"""The chat server under load, in one run: `llmstart serve` on a chat bundle, 200 streamed chat completions from 16
concurrent clients (`llmstart.deployment.load_chat_test`), with one slot (one reply decoded at a time) and with 16
(continuous batching: every reply in flight decoded as one batch). Prints errors, time to first token p50 / p99 and
tokens per second for each, and ends with one JSON line (`slots16_vs_slots1`: the tokens/s ratio).

    python bench/chat_serving.py [--model CHAT_BUNDLE] [--requests 200] [--concurrency 16] [--max-tokens 32]

Without `--model`, a chat bundle of chapter 6's tiny shape (a 2-layer, 64-wide character GPT, 128 positions, llmstart's
chat template) with random weights is written to a temporary folder: speed does not depend on the weights, but replies
end at the first end-of-turn token, so the tokens written are counted, not assumed.
"""

import argparse, json, shutil, tempfile
from pathlib import Path

import torch

from llmstart.alignment import SFT, add_chat_template, make_instructions
from llmstart.data import sample_path
from llmstart.deployment import ServerProcess, load_chat_test
from llmstart.embeddings import train_tokenizer
from llmstart.pretraining import CausalLM


def tiny_chat_bundle(folder: Path) -> Path:
    torch.manual_seed(0)
    rows = make_instructions(400, "train")
    texts = sample_path("corpus").read_text().splitlines() + [m["content"] for r in rows for m in r["messages"]]
    tok = train_tokenizer(texts, "char", vocab_size=300)
    add_chat_template(tok)
    CausalLM(
        tok, n_layer=2, n_head=4, n_embd=64, block_size=128, position="rope", norm="rmsnorm", mlp="swiglu", bias=False
    ).save_bundle(folder / "base")
    return SFT(str(folder / "base")).save_bundle(folder / "chat")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmstart-bench-"))
    try:
        model = args.model or str(tiny_chat_bundle(tmp))
        prompts = [r["messages"][:1] for r in make_instructions(50, "test")]
        results = {}
        for slots in (1, 16):
            with ServerProcess(model, slots=slots) as server:
                load_chat_test(server.url, prompts, requests=16, concurrency=4, max_tokens=args.max_tokens)  # warm-up
                r = load_chat_test(server.url, prompts, args.requests, args.concurrency, args.max_tokens)
            results[f"slots{slots}"] = r
            print(
                f"{slots} slot(s): {r['errors']} errors, time to first token p50 {r['ttft_p50_ms']} ms / p99 "
                f"{r['ttft_p99_ms']} ms, {r['tokens_per_s']} tokens/s ({r['tokens']} tokens in {r['seconds']} s)"
            )
        ratio = results["slots16"]["tokens_per_s"] / results["slots1"]["tokens_per_s"]
        print(
            json.dumps(
                {
                    "requests": args.requests,
                    "concurrency": args.concurrency,
                    **results,
                    "slots16_vs_slots1": round(ratio, 2),
                }
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
