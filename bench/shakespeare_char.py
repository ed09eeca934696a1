#!/usr/bin/env python
"""The character-level GPT on Tiny Shakespeare with nanoGPT's CPU configuration of `shakespeare_char` (4 layers, 4 heads,
128 wide, blocks of 64, batch 12, 2,000 iterations, lr 1e-3, no dropout), trained by `llmstart pretrain --config
shakespeare-char` on the 90 / 10 split. nanoGPT reports a validation loss of about 1.88 for this configuration on a CPU
(measured on these machines: 1.886 in 76 s). Prints the final validation loss -- over the *whole* held-out tenth, not an
estimate from 20 random batches -- and the wall time; the last line is one JSON object.

    python bench/shakespeare_char.py [--steps 2000] [--data PATH/tinyshakespeare.txt]
"""

import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from llmstart.data import shared_file

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--data", default=str(shared_file("tinyshakespeare.txt") or ""))
    args = ap.parse_args()
    if not args.data or not Path(args.data).exists():
        sys.exit("tinyshakespeare.txt not found: pass --data PATH or set LLMSTART_DATA_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "llmstart.cli",
            "pretrain",
            "--config",
            "shakespeare-char",
            "--data.source",
            args.data,
            "--trainer.max_steps",
            str(args.steps),
            "--trainer.output_dir",
            f"{tmp}/run",
            "--trainer.progress_bar",
            "false",
            "--trainer.val_check_interval",
            str(args.steps),
        ]  # validate once, at the end, over the whole held-out text
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode:
            sys.exit(r.stderr[-3000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        info = json.loads((Path(out["bundle"]) / "llmstart.json").read_text())
    tokens = args.steps * 12 * 64
    print(
        json.dumps(
            {
                "bench": "shakespeare_char",
                "steps": out["steps"],
                "val_loss": round(out["val_loss"], 4),
                "seconds": round(seconds, 1),
                "train_tokens_per_s": round(tokens / seconds),
                "nanogpt_val_loss": 1.886,
                "nanogpt_seconds": 76,
                "goal_val_loss": 1.88,
                "meets_goal": out["val_loss"] <= 1.88,
                "block_size": info["block_size"],
            }
        )
    )
