"""Chapter 8's real results, on a CPU: all-MiniLM-L6-v2 fine-tuned on SNLI pairs, served by `llmstart serve`.

1. Dynamic batching (max_batch_size 16, batch_timeout 10 ms) vs max_batch_size 1: 2,000 requests (one pair each) from
   32 concurrent clients against each server, one after the other: requests per second, p50 / p99 latency, and the ratio
   (goal: >= 3x the throughput).
2. ONNX Runtime vs PyTorch eager: ms per example at batch 32 on the held-out pairs (goal: >= 1.5x), and the export's
   parity (largest absolute logit difference, float32, goal <= 1e-4).

    python bench/serving.py [--data ../shared/data/snli_dev.jsonl] [--train 2000]     # ~5 minutes on 2 CPU cores

The last line of output is JSON.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import lightning as L

from llmstart.data import ClassificationDataModule, load_classification, minilm_path
from llmstart.deployment import ServerProcess, export_onnx, load_backend, load_test, request_body
from llmstart.finetuning import SequenceClassifier
from llmstart.optimization import backend_latency_ms
from llmstart.training import fit, make_trainer

LABELS = ["entailment", "neutral", "contradiction"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "snli_dev.jsonl"))
    p.add_argument("--train", type=int, default=2000, help="training pairs for the model served")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    started = time.perf_counter()
    ds = load_classification(args.data)
    names = ds.features["label"].names
    parts = ds.train_test_split(test_size=1842, seed=0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, part in [("train", parts["train"].select(range(args.train))), ("test", parts["test"])]:
            (tmp / f"{name}.jsonl").write_text(
                "".join(
                    json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]})
                    + "\n"
                    for r in part
                )
            )
        L.seed_everything(0, verbose=False)
        data = ClassificationDataModule(
            str(tmp / "train.jsonl"), None, tokenizer=minilm_path(), labels=LABELS, batch_size=32
        )
        model = SequenceClassifier(minilm_path(), labels=LABELS, lr=1e-4)
        fit(
            make_trainer(
                tmp / "run",
                max_epochs=1,
                progress_bar=False,
                logger=False,
                monitor=None,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                enable_model_summary=False,
            ),
            model,
            data,
            resume=False,
        )
        bundle = model.save_bundle(tmp / "model", data.tokenizer)
        report = export_onnx(str(bundle), str(tmp / "onnx"), parity_data=str(tmp / "test.jsonl"))
        pairs = [
            (r["premise"], r["hypothesis"]) for r in map(json.loads, (tmp / "test.jsonl").read_text().splitlines())
        ]
        torch_ms = backend_latency_ms(load_backend(tmp / "onnx", "torch"), pairs[:512])
        onnx_ms = backend_latency_ms(load_backend(tmp / "onnx", "onnx"), pairs[:512])
        print(f"batch 32: torch {torch_ms:.2f} ms/example, ONNX Runtime {onnx_ms:.2f}", file=sys.stderr)
        bodies = [request_body([x]) for x in pairs]
        serving = {}
        for name, batch in [("batched", 16), ("unbatched", 1)]:
            with ServerProcess(bundle, max_batch_size=batch, batch_timeout=0.01) as srv:
                load_test(srv.url, bodies, requests=64, concurrency=8)  # warm-up
                r = load_test(srv.url, bodies, requests=args.requests, concurrency=args.concurrency)
            serving[name] = {
                k: r[k] for k in ("requests", "concurrency", "errors", "rps", "p50_ms", "p95_ms", "p99_ms")
            }
            print(name, serving[name], file=sys.stderr)
    ratio = serving["batched"]["rps"] / serving["unbatched"]["rps"]
    print(
        json.dumps(
            {
                "serving": serving,
                "throughput_ratio": round(ratio, 2),
                "onnx_vs_torch_b32": {
                    "torch_ms": round(torch_ms, 3),
                    "onnx_ms": round(onnx_ms, 3),
                    "speedup": round(torch_ms / onnx_ms, 2),
                },
                "parity_max_abs_diff": report["parity_max_abs_diff"],
                "goals": {
                    "batching_3x": ratio >= 3,
                    "onnx_1.5x": torch_ms / onnx_ms >= 1.5,
                    "parity_1e-4": report["parity_max_abs_diff"] <= 1e-4,
                },
                "seconds": round(time.perf_counter() - started),
            }
        )
    )


if __name__ == "__main__":
    main()
