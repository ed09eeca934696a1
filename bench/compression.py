"""Chapter 7's real results: all-MiniLM-L6-v2 fine-tuned on 8,000 SNLI pairs, then int8, 50 % magnitude pruning with a
recovery fine-tune, and a distilled 3-layer student -- each measured against the original in the same run (CPU latency
per example at batch 1 and 32, weight-file size, held-out accuracy on the other 1,842 pairs).

Goals (issue 7): int8 >= 2x faster at batch 32, >= 2.5x smaller, accuracy within 1 point; the student >= 95 % of the
teacher's accuracy at >= 1.8x the speed; 50 % sparsity within 1 point after the recovery fine-tune.

    python bench/compression.py [--data ../shared/data/snli_dev.jsonl]     # ~8 minutes on 2 CPU cores

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
from transformers import AutoTokenizer

from llmstart.data import ClassificationDataModule, load_classification, minilm_path
from llmstart.finetuning import SequenceClassifier, predict
from llmstart.optimization import compress
from llmstart.training import make_trainer

LABELS = ["entailment", "neutral", "contradiction"]


def split(path, tmp):
    "Chapter 5's benchmark split: 8,000 training pairs sampled with seed 0, the other 1,842 held out (label names written)."
    ds = load_classification(path)
    names = ds.features["label"].names
    parts = ds.train_test_split(test_size=ds.num_rows - 8000, seed=0)
    for name, part in parts.items():
        rows = [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]} for r in part]
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp / "train.jsonl"), str(tmp / "test.jsonl")


def teacher(train, test, tmp):
    "The issue's fine-tuning: 1 epoch, batch 32, lr 1e-4, max length 128."
    L.seed_everything(0, verbose=False)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    data = ClassificationDataModule(train, test, tokenizer=tok, labels=LABELS, max_length=128, batch_size=32)
    model = SequenceClassifier(minilm_path(), lr=1e-4, weight_decay=0.01, warmup=0, schedule="linear")
    make_trainer(
        tmp / "teacher-run",
        max_epochs=1,
        progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        logger=False,
        monitor=None,
        limit_val_batches=0,
    ).fit(model, data)
    return model.save_bundle(tmp / "teacher", tok)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "snli_dev.jsonl"))
    args = p.parse_args()
    log = lambda row: print(json.dumps(row), file=sys.stderr, flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        train, test = split(args.data, tmp)
        t0 = time.perf_counter()
        bundle = teacher(train, test, tmp)
        print(f"teacher fine-tuned in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        original, int8 = compress(str(bundle), "int8", test, str(tmp / "int8"), report=log)
        _, smoothed = compress(
            str(bundle), "int8", test, str(tmp / "int8-smoothed"), train_data=train, smooth=0.8, report=log
        )
        inputs = [(r["premise"], r["hypothesis"]) for r in map(json.loads, Path(test).read_text().splitlines())]
        want = [p["label"] for p in predict(bundle, inputs)]
        agree = lambda b: round(sum(p["label"] == w for p, w in zip(predict(b, inputs), want)) / len(want), 4)
        int8["agreement"], smoothed["agreement"] = agree(tmp / "int8"), agree(tmp / "int8-smoothed")
        _, pruned = compress(
            str(bundle), "prune", test, str(tmp / "pruned"), train_data=train, sparsity=0.5, epochs=1, report=log
        )
        _, student = compress(
            str(bundle), "distill", test, str(tmp / "student"), train_data=train, layers=3, epochs=1, report=log
        )
    result = {
        "teacher_accuracy": original["accuracy"],
        "int8": {
            k: int8[k]
            for k in (
                "accuracy",
                "accuracy_delta",
                "agreement",
                "size_mb",
                "size_x",
                "latency_ms_b1",
                "latency_ms_b32",
                "speedup_b1",
                "speedup_b32",
            )
        },
        "int8_smoothed_0.8": {k: smoothed[k] for k in ("accuracy", "accuracy_delta", "agreement", "speedup_b32")},
        "original": {k: original[k] for k in ("parameters", "size_mb", "latency_ms_b1", "latency_ms_b32")},
        "pruned_50": {k: pruned[k] for k in ("accuracy", "accuracy_delta", "sparsity")},
        "student_3_layers": {
            k: student[k] for k in ("accuracy", "parameters", "size_mb", "latency_ms_b32", "speedup_b1", "speedup_b32")
        }
        | {"accuracy_ratio": round(student["accuracy"] / original["accuracy"], 4)},
        "goals": {
            "int8_2x_faster_b32": int8["speedup_b32"] >= 2,
            "int8_2.5x_smaller": int8["size_x"] >= 2.5,
            "int8_within_1_point": abs(int8["accuracy_delta"]) <= 0.01,
            "int8_agrees_97pct": int8["agreement"] >= 0.97,
            "student_95pct_accuracy": student["accuracy"] >= 0.95 * original["accuracy"],
            "student_1.8x_faster_b32": student["speedup_b32"] >= 1.8,
            "pruned_within_1_point": abs(pruned["accuracy_delta"]) <= 0.01,
        },
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
