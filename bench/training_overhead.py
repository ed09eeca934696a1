#!/usr/bin/env python
"""The recipe's overhead: the same model trained on the same batches by `llmstart.training` (Lightning, with its
callbacks, logging and checkpoints) and by a hand-written PyTorch loop doing the same work (AdamW with decay groups,
warmup + cosine, clipping at 1.0, a checkpoint of model, optimizer and schedule at each epoch's end and at the end).
Prints tokens/s of each; the last line is one JSON object with the ratio.

    python bench/training_overhead.py [--steps 150] [--repeats 2]

Timing excludes building the model and data for both; the Lightning figure includes everything the trainer does per
step. One untimed run of each warms up; then runs alternate (loop, recipe, loop, recipe, ...) and the best of each is kept.
"""

import argparse, json, os, sys, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
warnings.filterwarnings("ignore")
import lightning as L
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmstart.data import LanguageModelingDataModule, shared_file
from llmstart.embeddings import train_tokenizer
from llmstart.training import Recipe, make_scheduler, make_trainer, param_groups

BLOCK, BATCH = 128, 16


class GPT(Recipe):
    def __init__(self, vocab_size, **kw):
        super().__init__(**kw)
        self.model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_layer=2,
                n_embd=128,
                n_head=4,
                n_positions=BLOCK,
                resid_pdrop=0,
                embd_pdrop=0,
                attn_pdrop=0,
            )
        )

    def forward_loss(self, batch):
        return {"loss": self.model(**batch).loss, "n": batch["input_ids"][:, 1:].numel()}


class Clock(L.Callback):
    def on_train_start(self, *a):
        self.t0 = time.perf_counter()

    def on_train_end(self, *a):
        self.seconds = time.perf_counter() - self.t0


def run_recipe(data, vocab, steps, out):
    L.seed_everything(0, verbose=False)
    model, clock = GPT(vocab, lr=1e-3, weight_decay=0.1, warmup=0.1), Clock()
    trainer = make_trainer(
        out,
        max_steps=steps,
        monitor=None,
        progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
        log_every_n_steps=10,
    )
    trainer.fit(model, data)
    return steps * BATCH * BLOCK / clock.seconds


def run_loop(data, vocab, steps, out):
    L.seed_everything(0, verbose=False)
    model = GPT(vocab).model
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    sched = make_scheduler(opt, "cosine", int(0.1 * steps), steps)
    loader = data.train_dataloader()
    save = lambda: torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step},
        Path(out) / "last.ckpt",
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    t0, step = time.perf_counter(), 0
    while step < steps:
        for batch in loader:
            loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step == steps:
                break
        else:
            save()  # end of an epoch, as the recipe's checkpoint callback does
    save()
    return steps * BATCH * BLOCK / (time.perf_counter() - t0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    corpus = str(shared_file("wikitext2_valid.txt") or "sample:corpus")
    tok = train_tokenizer(corpus, "bpe", vocab_size=2000)
    data = LanguageModelingDataModule(corpus, tokenizer=tok, block_size=BLOCK, batch_size=BATCH)
    data.setup()
    loop, recipe = [], []
    with tempfile.TemporaryDirectory() as tmp:
        run_loop(data, len(tok), 20, Path(tmp) / "warm-loop")
        run_recipe(data, len(tok), 20, Path(tmp) / "warm-recipe")
        for r in range(args.repeats):
            loop.append(run_loop(data, len(tok), args.steps, Path(tmp) / f"l{r}"))
            recipe.append(run_recipe(data, len(tok), args.steps, Path(tmp) / f"r{r}"))
            print(
                f"repeat {r}: hand-written loop {loop[-1]:,.0f} tokens/s, recipe {recipe[-1]:,.0f} tokens/s",
                file=sys.stderr,
            )
    result = {
        "bench": "training_overhead",
        "corpus": Path(corpus).name,
        "steps": args.steps,
        "batch": BATCH,
        "block": BLOCK,
        "threads": torch.get_num_threads(),
        "loop_tokens_per_s": round(max(loop)),
        "recipe_tokens_per_s": round(max(recipe)),
        "ratio": round(max(recipe) / max(loop), 3),
    }
    print(json.dumps(result))
