"""Chapter 2: resume after SIGKILL, precision from the hardware, the recipe's optimizer and schedule."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from torch import nn

from llmstart import training as T
from llmstart.core import UsageError

JOB = Path(__file__).parent / "jobs" / "train_lm.py"


def start(out, corpus, **kw):
    args = [sys.executable, str(JOB), str(out), str(corpus)] + [f"--{k}={v}" for k, v in kw.items()]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def test_killed_run_resumes_with_the_same_command(tmp_path, shared):
    corpus = shared("wikitext2_valid.txt")
    reference = start(tmp_path / "reference", corpus)
    # the same job, killed with SIGKILL as soon as its first checkpoint exists
    victim = start(tmp_path / "victim", corpus)
    last = tmp_path / "victim" / "checkpoints" / "last.ckpt"
    t0 = time.time()
    while not last.exists():
        assert victim.poll() is None, "the job ended before writing a checkpoint"
        assert time.time() - t0 < 300, "no checkpoint after 5 minutes"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    saved_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 20 <= saved_step < 120
    resumed, err = result(start(tmp_path / "victim", corpus))  # the same command again
    assert f"resuming from {last} at step {saved_step}" in err
    ref, _ = result(reference)
    assert resumed["global_step"] == ref["global_step"] == 120
    # same seed, same data position: the resumed run ends where the uninterrupted one does
    assert abs(resumed["val_loss"] - ref["val_loss"]) < 0.01, (resumed, ref)


@pytest.mark.parametrize("kind", ["language-model", "classification", "sentence-pair"])
def test_resume_in_a_later_epoch_sees_the_same_batches(tmp_path, kind):
    """A crash in the middle of a later epoch (not epoch 0): the resumed run must draw that epoch's remaining batches, in the
    uninterrupted run's order, and end with the same loss (Lightning builds the resumed iterator before set_epoch)."""
    from lightning.pytorch.callbacks import Callback
    from llmstart.data import ClassificationDataModule, LanguageModelingDataModule
    from llmstart.embeddings import train_tokenizer
    from llmstart.pretraining import CausalLM

    tok = train_tokenizer("sample:corpus", "wordpiece", vocab_size=1000)

    class Record(Callback):
        def __init__(self):
            self.batches = {}

        def on_train_batch_start(self, trainer, module, batch, i):
            # which examples: their lengths and segments (masking, random by design, changes input_ids, not these)
            seen = (
                batch["attention_mask"].sum(1) * 1000 + batch.get("token_type_ids", batch["attention_mask"]).sum(1)
            ).tolist()
            self.batches[trainer.global_step] = (
                (trainer.current_epoch, batch["input_ids"].shape, seen)
                if kind == "sentence-pair"
                else (trainer.current_epoch, batch["input_ids"].sum().item())
            )

    class Crash(Callback):
        def on_train_batch_start(self, trainer, *a):
            if trainer.global_step == 50:
                raise RuntimeError("crash")  # just after the checkpoint of step 50

    def run(out, *callbacks):
        L.seed_everything(0, verbose=False)
        if kind == "language-model":
            data = LanguageModelingDataModule("sample:corpus", tokenizer=tok, block_size=64, batch_size=16)
            model = CausalLM(tok, n_layer=1, n_head=2, n_embd=32, block_size=64, lr=2e-3, warmup=0.1)
        elif kind == "sentence-pair":
            from llmstart.pretraining import MaskedLM, SentencePairDataModule

            data = SentencePairDataModule("sample:corpus", tokenizer=tok, task="sop", max_length=64, batch_size=16)
            model = MaskedLM(tok, hidden_size=32, num_layers=1, num_heads=2, max_positions=64, pair_task="sop", lr=2e-3)
        else:
            from llmstart.finetuning import Classifier

            data = ClassificationDataModule("sample:nli-val", tokenizer=tok, batch_size=32)

            class Bag(Classifier):  # a bag of embeddings: enough to have a loss that depends on the batch
                def __init__(self):
                    super().__init__(lr=1e-2, warmup=0.1)
                    self.emb, self.out = nn.EmbeddingBag(len(tok), 16), nn.Linear(16, 3)
                    self.setup_metrics(3)

                def forward_loss(self, batch):
                    logits = self.out(self.emb(batch["input_ids"]))
                    return {
                        "loss": nn.functional.cross_entropy(logits, batch["labels"]),
                        "n": len(logits),
                        "_logits": logits,
                        "_labels": batch["labels"],
                    }

            model = Bag()
        rec = Record()
        trainer = T.make_trainer(
            out,
            max_steps=80,
            checkpoint_every_n_steps=50,
            progress_bar=False,
            monitor=None,
            logger=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[rec, *callbacks],
        )
        T.fit(trainer, model, data)
        return rec.batches, trainer

    full, trainer = run(tmp_path / "full")
    assert full[50][0] >= 2 and 50 % trainer.num_training_batches != 0  # step 50 is inside epoch 2 or later
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path / "resumed", Crash())
    resumed, trainer2 = run(tmp_path / "resumed")
    assert min(resumed) == 50
    assert {s: resumed[s] for s in range(50, 80)} == {s: full[s] for s in range(50, 80)}
    assert trainer2.global_step == 80


@pytest.mark.parametrize(
    "capability, expected",
    [
        ((9, 0), "bf16-mixed"),  # H100 / H200
        ((8, 0), "bf16-mixed"),  # A100
        ((8, 6), "bf16-mixed"),  # RTX 30xx, A10
        ((7, 5), "16-mixed"),  # T4 (Colab's free GPU)
        ((7, 0), "16-mixed"),  # V100
        ((6, 0), "16-mixed"),  # P100
    ],
)
def test_precision_follows_the_gpu(capability, expected):
    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.get_device_capability", return_value=capability),
    ):
        assert T.choose_precision() == expected
        assert T.choose_precision("gpu") == expected
        assert T.choose_precision("cpu") == "32-true"


def test_precision_on_cpu_and_override(tmp_path):
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert T.choose_precision() == "32-true"
        assert T.make_trainer(tmp_path, max_steps=1, progress_bar=False, logger=False).precision == "32-true"
    assert (
        T.make_trainer(
            tmp_path, max_steps=1, precision="bf16-mixed", accelerator="cpu", progress_bar=False, logger=False
        ).precision
        == "bf16-mixed"
    )


class Tiny(T.Recipe):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))

    def forward_loss(self, batch):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x), y), "n": len(x)}


def loader(n=64, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=bs)


def test_weight_decay_groups():
    groups = T.param_groups(Tiny(), 0.1)
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([8, 4]), torch.Size([1, 8])]
    assert all(p.ndim == 1 for p in groups[1]["params"]) and len(groups[1]["params"]) == 4  # 2 biases, LayerNorm w + b
    assert groups[1]["weight_decay"] == 0.0


def test_schedule_accumulation_and_clipping(tmp_path):
    L.seed_everything(0, verbose=False)
    model = Tiny(lr=0.1, warmup=2, schedule="linear")
    lrs, norms = [], []

    class Watch(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            lrs.append(optimizer.param_groups[0]["lr"])

        def on_before_zero_grad(self, trainer, pl_module, optimizer):  # after the step: the gradients it used
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            if grads:
                norms.append(float(torch.nn.utils.get_total_norm(grads)))

    trainer = T.make_trainer(
        tmp_path,
        max_epochs=2,
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        monitor=None,
        logger=False,
        progress_bar=False,
        callbacks=[Watch()],
        enable_model_summary=False,
    )
    trainer.fit(model, loader())
    # 8 batches an epoch, accumulated in pairs: 4 optimizer steps an epoch, 8 in all
    assert trainer.global_step == 8 and len(lrs) == 8
    # warmup 2, linear to 0 at 8
    assert lrs[:3] == pytest.approx([0.0, 0.05, 0.1]) and lrs[-1] == pytest.approx(0.1 / 6)
    assert len(norms) >= 7 and max(norms) <= 0.5 + 1e-5 and max(norms) > 0.49  # clipped to 0.5, and clipping happened


def test_fit_needs_a_finite_run_for_the_schedule(tmp_path):
    class Endless(torch.utils.data.IterableDataset):
        def __iter__(self):
            while True:
                yield torch.randn(4), torch.randn(1)

    trainer = T.make_trainer(tmp_path, max_epochs=1, monitor=None, logger=False, progress_bar=False)
    with pytest.raises(ValueError, match="set the trainer's max_steps"):
        trainer.fit(Tiny(), torch.utils.data.DataLoader(Endless(), batch_size=4))


@pytest.fixture(scope="module")
def wandb_module(tmp_path_factory):
    """wandb, imported with the temporary folders it makes at import (wandb-media, wandb-artifacts) inside this run's
    temporary folder: they are removed with it, not left in /tmp when a worker exits without running finalizers."""
    import tempfile

    if "wandb" not in sys.modules:
        with mock.patch.object(tempfile, "tempdir", str(tmp_path_factory.mktemp("wandb-import"))):
            return pytest.importorskip("wandb")
    return pytest.importorskip("wandb")


def test_auto_logs_to_wandb_only_when_logged_in(tmp_path, monkeypatch, wandb_module):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_MODE", "offline")  # how wandb runs if used; not a reason to use it
    assert [type(l).__name__ for l in T.make_loggers(tmp_path, "x")] == ["CSVLogger"]
    (tmp_path / "netrc").write_text(
        "machine api.wandb.ai\n  login user\n  password 0123\n"
    )  # what `wandb login` writes
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert [type(l).__name__ for l in T.make_loggers(tmp_path, "x")] == ["CSVLogger", "WandbLogger"]
    monkeypatch.setenv("WANDB_MODE", "disabled")  # logged in, but turned off
    assert [type(l).__name__ for l in T.make_loggers(tmp_path, "x")] == ["CSVLogger"]
    with pytest.raises(UsageError, match="WANDB_MODE=disabled"):
        T.make_loggers(tmp_path, "x", kind="wandb")
    with pytest.raises(ValueError, match="logger must be"):
        T.make_loggers(tmp_path, "x", kind="tensorboard")


def wandb_history(path: Path) -> list[dict]:
    """The history rows (what `log` sent) of an offline wandb run's `.wandb` file: W&B's LevelDB-style log (a 7-byte
    header, then records of crc32, length, type in 32 KiB blocks, long ones split FIRST / MIDDLE / LAST) of protobufs."""
    import struct
    from wandb.proto import wandb_internal_pb2 as pb

    data, rows, pos, pending = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B", "not a wandb run file"
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending, pos = pending + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, or the LAST piece
            record = pb.Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path, monkeypatch, wandb_module):
    wandb = wandb_module
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "llmstart-test")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    L.seed_everything(0, verbose=False)
    trainer = T.make_trainer(
        tmp_path, max_steps=16, logger="wandb", log_every_n_steps=1, monitor=None, progress_bar=False, name="wb"
    )
    trainer.fit(Tiny(lr=0.05, warmup=0), loader())
    run = trainer.loggers[1].experiment
    assert run.project == "llmstart-test" and run.offline
    wandb.finish()
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")  # what `wandb sync` uploads
    deadline = (
        time.monotonic() + 60
    )  # wandb's writer is a separate process: on a loaded machine it may still be writing
    while True:
        history = wandb_history(run_file)
        logged = {r["trainer/global_step"]: r["train_loss"] for r in history if "train_loss" in r}
        if len(logged) >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    csv = [l.split(",") for l in (Path(trainer.loggers[0].log_dir) / "metrics.csv").read_text().splitlines()]
    in_csv = {
        int(r["step"]): float(r["train_loss"]) for r in (dict(zip(csv[0], l)) for l in csv[1:]) if r["train_loss"]
    }
    assert sorted(logged) == list(range(16)) == sorted(in_csv)  # every step's loss, in both loggers
    assert all(logged[k] == pytest.approx(in_csv[k], rel=1e-6) for k in logged)
    assert logged[15] < logged[0]  # and it trained
    assert any(k.startswith("lr-AdamW") for r in history for k in r)  # the learning-rate monitor logs there too
