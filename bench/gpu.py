#!/usr/bin/env python
"""GPU figures in one short run (about 10 minutes): what bench/gpu.sh runs on a lent GPU machine.

    python bench/gpu.py [--steps 20] [--out results/gpu.json] [nbs/02_training.ipynb ...]

1. The GPU's bf16 matrix-multiply throughput, measured (an 8192^3 product, the mean of 10 after 3 warm-ups): the peak
   every utilisation below is a share of.
2. Every chapter's real path on this GPU (`tools/dry_run.py --full-size`): the hub's models as stand-ins of their real
   sizes, each training run cut to `--steps` steps. Each run's measured seconds a step give its model FLOPs utilisation
   (6 N tokens / seconds / peak) and, times the steps the real run takes, the real run's time on this GPU
   (tools/run_times.py puts it beside the estimates in every chapter).
3. Weight-only int8 and int4 quantization (torchao) of a BERT-base-sized classifier on a batch of 32 x 128 tokens:
   milliseconds a batch and saved MB against bf16 (`llmstart.optimization.weight_only_quantized`).

Writes everything to `--out` (results/gpu.json), from which the home page's GPU table is made; the last line printed
is a one-line summary in JSON.
"""

import argparse, json, platform, subprocess, sys, tempfile, time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def matmul_peak(device: str, n: int = 8192, repeats: int = 10) -> float:
    "Measured FLOP/s of an n x n x n matrix product: bf16 on a GPU, float32 on a CPU."
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


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
    return [
        {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
        for r in weight_only_quantized(model, batch)
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="*", help="chapters to run (default: every chapter)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps every training run is cut to")
    ap.add_argument("--workers", type=int, default=4, help="chapters run at once (they share the GPU)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu.json")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a check of this script, not figures)")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        sys.exit("bench/gpu.py measures a GPU and this machine has none (--allow-cpu checks the script on a CPU)")
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    peak = matmul_peak(device, 8192 if device == "cuda" else 1024)
    print(f"{name}: matrix products at {peak / 1e12:.1f} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="llmstart-gpu-") as tmp:
        report = Path(tmp) / "dry-run.json"
        cmd = [sys.executable, str(ROOT / "tools" / "dry_run.py"), "--full-size", "--steps", str(args.steps)]
        cmd += ["--workers", str(args.workers), "--json", str(report), *args.notebooks]
        subprocess.run(cmd, check=False)
        dry = json.loads(report.read_text()) if report.exists() else {"notebooks": []}
    for nb in dry["notebooks"]:
        for run in nb["runs"]:
            if run["tokens_per_step"] and run["seconds_per_step"]:
                flops = (6 if run["trained_parameters"] > run["parameters"] / 2 else 4) * run["parameters"]
                run["mfu"] = round(flops * run["tokens_per_step"] / run["seconds_per_step"] / peak, 4)
            if run["planned_steps"] and run["seconds_per_step"]:
                run["real_seconds"] = round(run["planned_steps"] * run["seconds_per_step"], 1)
    result = {
        "device": name,
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "matmul_tflops": round(peak / 1e12, 1),
        "quantized": quantized(device),
        "dry_run": dry,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    ok = [nb["notebook"] for nb in dry["notebooks"] if nb["ok"]]
    failed = [nb["notebook"] for nb in dry["notebooks"] if not nb["ok"]]
    print(json.dumps({"device": name, "matmul_tflops": result["matmul_tflops"], "ok": ok, "failed": failed}))
    return 0 if not failed and dry["notebooks"] else 1


if __name__ == "__main__":
    sys.exit(main())
