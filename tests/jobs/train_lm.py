"""A small training job on the recipe, for the resume-after-kill test: the same command continues a killed run.

    python tests/jobs/train_lm.py OUTPUT_DIR CORPUS [--max_steps N] [--every N]

Prints one JSON line at the end: the final validation loss and the global step.
"""

import argparse
import json

import lightning as L
from transformers import GPT2Config, GPT2LMHeadModel

from llmstart.data import LanguageModelingDataModule
from llmstart.embeddings import train_tokenizer
from llmstart.training import Recipe, fit, make_trainer


class TinyGPT(Recipe):
    def __init__(self, vocab_size: int, **recipe):
        super().__init__(**recipe)
        self.model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_layer=2,
                n_embd=64,
                n_head=2,
                n_positions=64,
                resid_pdrop=0,
                embd_pdrop=0,
                attn_pdrop=0,
            )
        )

    def forward_loss(self, batch):
        return {"loss": self.model(**batch).loss, "n": batch["input_ids"][:, 1:].numel()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("output")
    ap.add_argument("corpus")
    ap.add_argument("--max_steps", type=int, default=120)
    ap.add_argument("--every", type=int, default=20)
    args = ap.parse_args()
    L.seed_everything(0, verbose=False)
    tok = train_tokenizer(args.corpus, "bpe", vocab_size=1000)
    data = LanguageModelingDataModule(args.corpus, tokenizer=tok, block_size=64, batch_size=8)
    model = TinyGPT(len(tok), lr=3e-3, warmup=0.1)
    trainer = make_trainer(
        args.output,
        max_steps=args.max_steps,
        checkpoint_every_n_steps=args.every,
        val_check_interval=args.every * 3,
        progress_bar=False,
        enable_model_summary=False,
    )
    fit(trainer, model, data)
    val = trainer.validate(model, data, verbose=False)[0]["val_loss"]
    print(json.dumps({"val_loss": val, "global_step": trainer.global_step}))
