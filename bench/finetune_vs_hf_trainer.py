#!/usr/bin/env python
"""Fine-tuning all-MiniLM-L6-v2 for NLI, through llmstart and through a plain Hugging Face `Trainer`, in one run: 8,000
pairs sampled with seed 0 from SNLI's development set, 1 epoch, batch 32, lr 1e-4 (linear decay, no warmup, AdamW with
weight decay 0.01 on both), max length 128, evaluated on the remaining 1,842 pairs. Prints the accuracy and wall time of
each; the last line is one JSON object with the time ratio (llmstart / Trainer; below 1 is faster).

    python bench/finetune_vs_hf_trainer.py [--data PATH/snli_dev.jsonl]

Both use the same tokenizer, model and dynamic padding; llmstart batches by length (its main lever), the Trainer
samples batches at random (its default). Times cover training and the final evaluation of each.
"""

import argparse, json, os, sys, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
import lightning as L
import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from llmstart.data import (
    ClassificationDataModule,
    load_classification,
    minilm_path,
    shared_file,
    tokenize_classification,
)
from llmstart.finetuning import SequenceClassifier, evaluate_classifier
from llmstart.training import make_trainer

transformers.logging.set_verbosity_error()
LABELS = ["entailment", "neutral", "contradiction"]


def split(path, tmp):
    ds = load_classification(path)
    parts = ds.train_test_split(test_size=ds.num_rows - 8000, seed=0)
    parts["train"].to_json(tmp / "train.jsonl")
    parts["test"].to_json(tmp / "test.jsonl")
    return tmp / "train.jsonl", tmp / "test.jsonl"


def with_llmstart(train, test, tmp):
    L.seed_everything(0, verbose=False)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(minilm_path())
    data = ClassificationDataModule(str(train), str(test), tokenizer=tok, labels=LABELS, max_length=128, batch_size=32)
    model = SequenceClassifier(minilm_path(), lr=1e-4, weight_decay=0.01, warmup=0, schedule="linear")
    trainer = make_trainer(
        tmp / "llmstart",
        max_epochs=1,
        progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        logger=False,
        monitor=None,
    )
    trainer.fit(model, data)
    seconds = time.perf_counter() - t0
    bundle = model.save_bundle(tmp / "bundle", tok)
    return float(model.last_metrics["accuracy"]), seconds, evaluate_classifier(bundle, str(test))["accuracy"]


def with_hf_trainer(train, test, tmp):
    transformers.set_seed(0)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tr = tokenize_classification(load_classification(str(train), labels=LABELS), tok, 128).rename_column(
        "label", "labels"
    )
    te = tokenize_classification(load_classification(str(test), labels=LABELS), tok, 128).rename_column(
        "label", "labels"
    )
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3)
    args = TrainingArguments(
        output_dir=str(tmp / "hf"),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=32,
        num_train_epochs=1,
        learning_rate=1e-4,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_grad_norm=1.0,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        logging_steps=50,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tr,
        eval_dataset=te,
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())},
    )
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    return accuracy, time.perf_counter() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shared_file("snli_dev.jsonl") or ""))
    args = ap.parse_args()
    if not args.data or not Path(args.data).exists():
        sys.exit("snli_dev.jsonl not found: pass --data PATH or set LLMSTART_DATA_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, test = split(args.data, tmp)
        hf_acc, hf_s = with_hf_trainer(train, test, tmp)
        print(f"HF Trainer: accuracy {hf_acc:.4f} in {hf_s:.0f} s", file=sys.stderr)
        ours_acc, ours_s, bundle_acc = with_llmstart(train, test, tmp)
        print(
            f"llmstart:   accuracy {ours_acc:.4f} in {ours_s:.0f} s (bundle re-evaluated: {bundle_acc:.4f})",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "bench": "finetune_vs_hf_trainer",
                "model": "all-MiniLM-L6-v2",
                "train_pairs": 8000,
                "test_pairs": 1842,
                "threads": torch.get_num_threads(),
                "hf_trainer_accuracy": round(hf_acc, 4),
                "hf_trainer_seconds": round(hf_s, 1),
                "llmstart_accuracy": round(ours_acc, 4),
                "llmstart_seconds": round(ours_s, 1),
                "llmstart_bundle_accuracy": bundle_acc,
                "time_ratio": round(ours_s / hf_s, 3),
                "goal": "accuracy >= Trainer's, time ratio <= 0.67",
            }
        )
    )
