#!/usr/bin/env python
"""GPU figures in one short run (about 10 minutes): what bench/gpu.sh runs on a lent GPU machine.

    python bench/gpu.py [--steps 20] [--workers 1] [--out results/gpu.json] [nbs/02_training.ipynb ...]

1. The GPU's bf16 matrix-multiply throughput, measured (8192^3 products, the mean of 50 after 5 warm-ups): the peak
   every utilisation below is a share of.
2. Chapter 3's `GPT` at GPT-2-small's size (12 layers, 768 wide, 1,024 tokens of context), GPT-2's block and the modern
   one (RoPE, RMSNorm, SwiGLU), bf16 autocast, AdamW: training tokens/s and model FLOPs utilisation
   (`llmstart.transformer.flops_per_token` over the measured peak), eager and under `torch.compile`.
3. Weight-only int8 and int4 quantization (torchao) of a BERT-base-sized classifier on a batch of 32 x 128 tokens:
   milliseconds a batch and saved MB against bf16 (`llmstart.optimization.weight_only_quantized`).
   Generation serving (bench/generation_serving.py on the GPU): chapter 3's `GPT` at GPT-2-small's size in bf16, 64
   requests from 16 closed-loop streams, one at a time vs static vs continuous batching: tokens/s and time to first
   token.
4. The real path of every chapter that trains a transformer (default: those nbs/run_times.json estimates) on this
   GPU (`tools/dry_run.py --full-size`): the hub's models as stand-ins of their real sizes, each training run cut to
   `--steps` steps, one chapter at a time by default so that no two share the GPU while timed. Each run's measured
   seconds a step give its model FLOPs utilisation (FLOPs a token as tools/run_times.py counts them, times tokens a
   step, over seconds a step and the peak) and, times the steps the real run takes, the real run's time on this GPU.

`--out` (results/gpu.json) is written after every phase, so a run stopped by its time limit keeps what it measured;
the home page's GPU table and the chapters' measured times are made from it (tools/run_times.py). The last line
printed is a one-line summary in JSON.
"""

import argparse, json, os, platform, signal, subprocess, sys, tempfile, traceback
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def quantized(device: str) -> list[dict]:
    "`weight_only_quantized` on a BERT-base-sized classifier (random weights: speed and size do not depend on them)."
    import torch
    from transformers import AutoModelForSequenceClassification
    from dry_run import bert_config
    from llmstart.optimization import weight_only_quantized

    config = bert_config(full=True)
    config.num_labels = 3
    model = AutoModelForSequenceClassification.from_config(config)
    batch = {"input_ids": torch.randint(1000, 30000, (32, 128), device=device)}
    rows = weight_only_quantized(model, batch, repeats=20 if device == "cuda" else 2)
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def generation_serving(device: str, requests: int = 64, streams: int = 16) -> dict:
    "bench/generation_serving.py's comparison on `device`, GPT-2-small-sized `GPT` in bf16 (random weights)."
    import torch
    from generation_serving import compare  # bench/generation_serving.py
    from llmstart.deployment import mixed_requests
    from llmstart.transformer import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=50304,
        block_size=1024,
        n_layer=12,
        n_head=12,
        n_embd=768,
        position="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=False,
    )
    model = GPT(config).to(device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32).eval()
    return {
        "model": "GPT 12 x 768 (modern block)",
        "requests": requests,
        "streams": streams,
        **compare(model, mixed_requests(requests, config.vocab_size), streams, same_tokens=device != "cuda"),
    }


def summarise(dry: dict, peak: float) -> dict:
    """`dry` (a `tools/dry_run.py --json` report) with each logged run's `mfu` (measured FLOP/s over `peak`) and
    `real_seconds` (the planned steps at the measured seconds a step) where its log has what they need."""
    from run_times import flops_per_token, model_sizes

    for nb in dry["notebooks"]:
        for run in nb["runs"]:
            if run["tokens_per_step"] and run["seconds_per_step"]:  # the models measured are already full-size
                flops = run["tokens_per_step"] * sum(flops_per_token(*s) for s in model_sizes(run, grow=False))
                run["mfu"] = round(flops / run["seconds_per_step"] / peak, 4)
            if run["planned_steps"] and run["seconds_per_step"]:
                run["real_seconds"] = round(run["planned_steps"] * run["seconds_per_step"], 1)
    return dry


def training_chapters() -> list[str]:
    "The chapters whose real path trains a transformer, as nbs/run_times.json says (all chapters without it)."
    path = ROOT / "nbs" / "run_times.json"
    if not path.exists():
        return []
    chapters = json.loads(path.read_text())["chapters"]
    return [str(ROOT / "nbs" / n) for n, ch in chapters.items() if ch["real"] and ch["real"]["flops"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="*", help="chapters to run (default: those whose real path trains)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps every training run is cut to")
    ap.add_argument("--workers", type=int, default=1, help="chapters run at once (more share the GPU while timed)")
    ap.add_argument("--timeout", type=int, default=420, help="seconds the chapters' run may take in all")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu.json")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a check of this script, not figures)")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        sys.exit("bench/gpu.py measures a GPU and this machine has none (--allow-cpu checks the script on a CPU)")
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    result = {"device": name, "date": date.today().isoformat(), "torch": torch.__version__, "errors": []}

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    from llmstart.transformer import matmul_peak

    peak = matmul_peak(8192 if device == "cuda" else 1024, repeats=50, device=device)
    result["matmul_tflops"] = round(peak / 1e12, 1)
    print(f"{name}: matrix products at {peak / 1e12:.1f} TFLOP/s", flush=True)
    save()
    try:
        from gpt_training import gpt_training  # bench/gpt_training.py

        result["gpt"] = gpt_training(device, peak)
    except Exception:
        result["gpt"] = []
        result["errors"].append("gpt: " + traceback.format_exc(limit=3))
    save()
    try:
        result["quantized"] = quantized(device)
    except Exception:  # an older torchao, say: the other figures still count
        result["quantized"] = []
        result["errors"].append("quantized: " + traceback.format_exc(limit=3))
    save()
    try:
        result["generation_serving"] = generation_serving(device)
    except Exception:
        result["generation_serving"] = {}
        result["errors"].append("generation serving: " + traceback.format_exc(limit=3))
    save()
    notebooks = args.notebooks or training_chapters()
    with tempfile.TemporaryDirectory(prefix="llmstart-gpu-") as tmp:
        report = Path(tmp) / "dry-run.json"
        cmd = [sys.executable, str(ROOT / "tools" / "dry_run.py"), "--full-size", "--steps", str(args.steps)]
        cmd += ["--workers", str(args.workers), "--json", str(report), *notebooks]
        proc = subprocess.Popen(cmd, start_new_session=True)  # its own process group: stopped with its notebooks
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            result["errors"].append(f"dry run: stopped after {args.timeout} s; the chapters finished by then are kept")
        dry = json.loads(report.read_text()) if report.exists() else {"notebooks": []}
    result["dry_run"] = summarise(dry, peak) | {"workers": args.workers}
    save()
    ok = [nb["notebook"] for nb in dry["notebooks"] if nb["ok"]]
    failed = [nb["notebook"] for nb in dry["notebooks"] if not nb["ok"]]
    print(json.dumps({"device": name, "matmul_tflops": result["matmul_tflops"], "ok": ok, "failed": failed}))
    return 0 if dry["notebooks"] and not failed and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
