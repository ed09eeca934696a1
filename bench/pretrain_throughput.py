#!/usr/bin/env python
"""Masked-LM training throughput: `llmstart`'s `MaskedLM` on the recipe against a plain Hugging Face `Trainer` with
`DataCollatorForLanguageModeling`, on the same BERT configuration, the same packed WikiText-2 blocks, the same batch size,
optimizer settings and schedule, no evaluation. Prints tokens/s of each; the last line is one JSON object with the ratio.

    python bench/pretrain_throughput.py [--steps 150] [--repeats 2]

One untimed short run of each warms up; then runs alternate and the best of each is kept. The llmstart figure includes
its final checkpoint (the Trainer here saves nothing), so the comparison leans against llmstart. Most of the difference
is one design choice: `MaskedLM` runs BERT's vocabulary-sized output layer only on the ~15 % of positions that carry a
label, where `BertForMaskedLM` (under the Trainer) computes it for every token.
"""

import argparse, json, os, sys, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
import lightning as L
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from llmstart.data import LanguageModelingDataModule, shared_file
from llmstart.embeddings import train_tokenizer
from llmstart.pretraining import MaskedLM
from llmstart.training import make_trainer

transformers.logging.set_verbosity_error()
BLOCK, BATCH, SIZES = 128, 16, dict(hidden_size=256, num_layers=4, num_heads=4)


class Clock(L.Callback):
    def on_train_start(self, *a):
        self.t0 = time.perf_counter()

    def on_train_end(self, *a):
        self.seconds = time.perf_counter() - self.t0


def ours(tok, data, steps, out):
    L.seed_everything(0, verbose=False)
    model, clock = MaskedLM(tok, max_positions=BLOCK, lr=5e-4, weight_decay=0.01, warmup=0.1, **SIZES), Clock()
    trainer = make_trainer(
        out,
        max_steps=steps,
        monitor=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(model, data)
    return steps * BATCH * BLOCK / clock.seconds


def hf_trainer(tok, data, steps, out):
    transformers.set_seed(0)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=SIZES["hidden_size"],
        num_hidden_layers=SIZES["num_layers"],
        num_attention_heads=SIZES["num_heads"],
        intermediate_size=4 * SIZES["hidden_size"],
        max_position_embeddings=BLOCK,
        pad_token_id=tok.pad_token_id,
    )
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=5e-4,
        weight_decay=0.01,
        warmup_steps=int(0.1 * steps),
        lr_scheduler_type="cosine",
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=BertForMaskedLM(config),
        args=args,
        train_dataset=data.train_ds.with_format(None),
        data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
    )
    t0 = time.perf_counter()
    trainer.train()
    return steps * BATCH * BLOCK / (time.perf_counter() - t0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    corpus = str(shared_file("wikitext2_valid.txt") or "sample:corpus")
    tok = train_tokenizer(corpus, "wordpiece", vocab_size=8000)
    data = LanguageModelingDataModule(corpus, tokenizer=tok, block_size=BLOCK, batch_size=BATCH)
    data.setup()
    mine, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ours(tok, data, 10, Path(tmp) / "warm-ours")
        hf_trainer(tok, data, 10, Path(tmp) / "warm-hf")
        for r in range(args.repeats):
            theirs.append(hf_trainer(tok, data, args.steps, Path(tmp) / f"hf{r}"))
            mine.append(ours(tok, data, args.steps, Path(tmp) / f"ours{r}"))
            print(
                f"repeat {r}: HF Trainer {theirs[-1]:,.0f} tokens/s, llmstart {mine[-1]:,.0f} tokens/s", file=sys.stderr
            )
    print(
        json.dumps(
            {
                "bench": "pretrain_throughput",
                "corpus": Path(corpus).name,
                "steps": args.steps,
                "batch": BATCH,
                "block": BLOCK,
                **SIZES,
                "threads": torch.get_num_threads(),
                "hf_trainer_tokens_per_s": round(max(theirs)),
                "llmstart_tokens_per_s": round(max(mine)),
                "ratio": round(max(mine) / max(theirs), 3),
            }
        )
    )
