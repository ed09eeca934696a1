#!/usr/bin/env python
"""nanoGPT's own `train.py` and llmstart's GPT on Tiny Shakespeare at the character level, in one run.

The peer: nanoGPT (karpathy/nanoGPT at 3adf61e) with the CPU configuration its README gives for shakespeare_char --
4 layers, 4 heads, 128 wide, blocks of 64, batch 12, 2,000 iterations, lr 1e-3 decayed over 2,000, no dropout, no
compile -- started as its README says (its `prepare.py`, then `train.py`). Ours: `llmstart pretrain --config
shakespeare-char`, the same sizes, data split and batch with chapter 3's modern block (RoPE, RMSNorm, SwiGLU) and its
own schedule (1,200 steps, lr 2e-3). Both run one after the other on the same machine; each wall time is the whole
command (imports, data preparation, training, its evaluations, saving). nanoGPT estimates its loss every 250 steps
on 20 batches; ours is validated once, at the end, on the whole held-out text.

Both validation losses are measured the same way, over the *whole* held-out tenth of the text in non-overlapping
blocks of 65 characters (64 predictions each): ours by the recipe, nanoGPT's by loading its final checkpoint into its
own model class (its `train.py` itself estimates the loss from 20 random batches; that figure is printed too).

    python bench/shakespeare_char.py --nanogpt PATH/TO/nanoGPT [--data tinyshakespeare.txt] [--steps N]

The last line is one JSON object.
"""

import argparse, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from llmstart.data import shared_file

ROOT = Path(__file__).resolve().parent.parent

NANOGPT_ARGS = (
    "config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 "
    "--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0"
).split()


def timed(cmd: list[str], cwd=None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{' '.join(map(str, cmd[:4]))} ... failed:\n{r.stderr[-3000:]}")
    return r, seconds


def nanogpt_full_val_loss(repo: Path, out_dir: Path) -> float:
    "The loss of nanoGPT's final checkpoint over all of val.bin, in blocks of 65 (as llmstart's validation)."
    code = f"""
import sys, numpy as np, torch
sys.path.insert(0, {str(repo)!r})
from model import GPT, GPTConfig
ck = torch.load({str(out_dir / "ckpt.pt")!r}, map_location="cpu", weights_only=False)
m = GPT(GPTConfig(**ck["model_args"]))
m.load_state_dict({{k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()}})
m.eval()
data = torch.from_numpy(np.fromfile({str(repo / "data/shakespeare_char/val.bin")!r}, dtype=np.uint16).astype(np.int64))
blocks = data[: len(data) // 65 * 65].view(-1, 65)
total = 0.0
with torch.no_grad():
    for b in blocks.split(64):
        _, loss = m(b[:, :-1].contiguous(), b[:, 1:].contiguous())
        total += float(loss) * b[:, 1:].numel()
print(total / blocks[:, 1:].numel())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"evaluating nanoGPT's checkpoint failed:\n{r.stderr[-3000:]}")
    return float(r.stdout.strip().splitlines()[-1])  # (its model prints its parameter count first)


def run_nanogpt(source: Path, data: Path, tmp: Path) -> dict:
    repo = tmp / "nanoGPT"
    shutil.copytree(source, repo, ignore=shutil.ignore_patterns(".git", "out*"))
    shutil.copyfile(data, repo / "data/shakespeare_char/input.txt")  # prepare.py downloads it otherwise
    _, prep = timed([sys.executable, "prepare.py"], cwd=repo / "data/shakespeare_char")
    out_dir = tmp / "out-nanogpt"
    r, seconds = timed(
        [sys.executable, "train.py", *NANOGPT_ARGS, f"--out_dir={out_dir}", "--always_save_checkpoint=True"], cwd=repo
    )
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", r.stdout)
    if not evals:
        sys.exit(f"nanoGPT printed no evaluation:\n{r.stdout[-2000:]}")
    return {
        "seconds": round(prep + seconds, 1),
        "val_loss": round(nanogpt_full_val_loss(repo, out_dir), 4),
        "val_loss_estimate_20_batches": float(evals[-1][2]),
        "steps": int(evals[-1][0]),
    }


def run_llmstart(data: Path, tmp: Path, steps: int | None) -> dict:
    cmd = [sys.executable, "-m", "llmstart.cli", "pretrain", "--config", "shakespeare-char", "--data.source", str(data)]
    cmd += ["--trainer.output_dir", str(tmp / "llmstart"), "--trainer.progress_bar", "false"]
    steps = steps or yaml.safe_load((ROOT / "configs" / "shakespeare-char.yaml").read_text())["trainer"]["max_steps"]
    cmd += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]  # validated once, at the end
    r, seconds = timed(cmd)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "val_loss": round(out["val_loss"], 4), "steps": out["steps"]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT (commit 3adf61e)")
    ap.add_argument("--data", type=Path, default=shared_file("tinyshakespeare.txt"))
    ap.add_argument("--steps", type=int, default=None, help="llmstart's steps (default: the recipe's, 1,200)")
    args = ap.parse_args()
    if not (args.nanogpt / "train.py").exists():
        sys.exit(f"{args.nanogpt}: no train.py; pass --nanogpt a checkout of karpathy/nanoGPT")
    if not args.data or not Path(args.data).exists():
        sys.exit("tinyshakespeare.txt not found: pass --data PATH or set LLMSTART_DATA_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        peer = run_nanogpt(args.nanogpt, args.data, Path(tmp))
        print(
            f"nanoGPT:  val loss {peer['val_loss']:.4f} in {peer['seconds']:.1f} s ({peer['steps']} steps)", flush=True
        )
        ours = run_llmstart(args.data, Path(tmp), args.steps)
        print(f"llmstart: val loss {ours['val_loss']:.4f} in {ours['seconds']:.1f} s ({ours['steps']} steps)")
    print(
        json.dumps(
            {
                "bench": "shakespeare_char",
                "nanogpt": peer,
                "llmstart": ours,
                "time_ratio": round(ours["seconds"] / peer["seconds"], 3),
                "val_loss_difference": round(ours["val_loss"] - peer["val_loss"], 4),
                "goal": "llmstart val_loss <= 1.80 at time_ratio <= 1.0",
                "meets_goal": ours["val_loss"] <= 1.80 and ours["seconds"] <= peer["seconds"],
            }
        )
    )
