"""Chapter 5: llmstart finetune -> evaluate on real pairs and single texts, exact reproduction, LoRA, bad input."""

import json

import lightning as L
import pytest
import torch

from llmstart import finetuning as FT
from llmstart.core import DataError, UsageError
from llmstart.data import ClassificationDataModule, load_classification, minilm_path
from llmstart.training import make_trainer
from conftest import cli

LABELS = ["entailment", "neutral", "contradiction"]


@pytest.fixture(scope="module")
def snli_files(shared, tmp_path_factory):
    "A small real sample: 400 training and 200 held-out SNLI pairs, and the same as single texts (hypothesis only)."
    tmp = tmp_path_factory.mktemp("snli")
    ds = load_classification(shared("snli_dev.jsonl")).shuffle(seed=0)
    train, val = ds.select(range(400)), ds.select(range(400, 600))
    names = ds.features["label"].names  # written as label names, as a user's file has them
    for kind, part in [("train", train), ("val", val)]:
        pairs = [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]} for r in part]
        texts = [{"text": r["hypothesis"], "label": names[r["label"]]} for r in part]
        for stem, rows in [("pairs", pairs), ("text", texts)]:
            (tmp / f"{stem}_{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp


def run(*args, ok=True):
    r = cli(*args)
    if ok:
        assert r.returncode == 0, r.stderr[-4000:]
        return json.loads(r.stdout.strip().splitlines()[-1])
    return r


@pytest.mark.parametrize("kind", ["pairs", "text"])
def test_finetune_then_evaluate(snli_files, tmp_path, kind):
    train, val = snli_files / f"{kind}_train.jsonl", snli_files / f"{kind}_val.jsonl"
    out = run(
        "finetune",
        "--model.backbone",
        minilm_path(),
        "--data.train_file",
        str(train),
        "--data.val_file",
        str(val),
        "--trainer.max_epochs",
        "1",
        "--trainer.output_dir",
        str(tmp_path / "run"),
        "--trainer.progress_bar",
        "false",
        "--output",
        str(tmp_path / "bundle"),
    )
    assert out["bundle"] == str(tmp_path / "bundle") and out["steps"] == 13  # 400 examples / batch 32
    info = json.loads((tmp_path / "bundle" / "llmstart.json").read_text())
    assert info["task"] == "classification" and info["text_columns"] == (
        ["premise", "hypothesis"] if kind == "pairs" else ["text"]
    )
    labels = out["labels"]
    assert sorted(labels) == sorted(LABELS) and info["labels"] == labels
    ev = run("evaluate", "--model", str(tmp_path / "bundle"), "--data", str(val))
    assert ev["n"] == 200 and 0.0 <= ev["macro_f1"] <= ev["accuracy"] + 0.2
    # the bundle reproduces the training run's own evaluation exactly, through evaluate and through predict
    assert ev["accuracy"] == pytest.approx(out["val_accuracy"], abs=1e-5)
    rows = load_classification(val, labels=labels)
    inputs = list(zip(rows["premise"], rows["hypothesis"])) if kind == "pairs" else list(rows["text"])
    preds = FT.predict(tmp_path / "bundle", inputs)
    hits = sum(p["label"] == labels[y] for p, y in zip(preds, rows["label"]))
    assert hits / len(preds) == pytest.approx(ev["accuracy"], abs=1e-9)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-3 for p in preds)


def test_lora_trains_only_adapters_and_head(snli_files, tmp_path):
    L.seed_everything(0, verbose=False)
    data = ClassificationDataModule(
        str(snli_files / "pairs_train.jsonl"),
        str(snli_files / "pairs_val.jsonl"),
        tokenizer=minilm_path(),
        labels=LABELS,
        batch_size=32,
    )
    model = FT.SequenceClassifier(minilm_path(), labels=LABELS, lora=True, lora_rank=4, lr=2e-3)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    make_trainer(
        tmp_path,
        max_steps=5,
        logger=False,
        progress_bar=False,
        monitor=None,
        limit_val_batches=2,
        enable_model_summary=False,
    ).fit(model, data)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= set(trainable)
    assert any("lora_B" in n for n in changed) and any("classifier" in n for n in changed)
    n_train, n_all = FT.trainable_parameters(model)
    assert n_train < 0.01 * n_all
    bundle = model.save_bundle(tmp_path / "bundle", data.tokenizer)
    loaded, tok, info = FT.load_classifier(bundle)
    assert not any("lora" in n for n, _ in loaded.named_parameters())  # merged: a plain model
    assert info["lora"] is True and FT.predict(bundle, [("A dog runs.", "An animal moves.")])[0]["label"] in LABELS


def test_bad_input(snli_files, tmp_path):
    common = [
        "--model.backbone",
        minilm_path(),
        "--trainer.max_epochs",
        "1",
        "--trainer.progress_bar",
        "false",
        "--trainer.output_dir",
        str(tmp_path / "run"),
    ]
    unseen = tmp_path / "val_unseen.jsonl"
    unseen.write_text(json.dumps({"premise": "A man sleeps.", "hypothesis": "He rests.", "label": "maybe"}) + "\n")
    r = run(
        "finetune",
        *common,
        "--data.train_file",
        str(snli_files / "pairs_train.jsonl"),
        "--data.val_file",
        str(unseen),
        ok=False,
    )
    assert r.returncode == 1 and f"{unseen}, line 1: unknown label 'maybe'" in r.stderr and "Traceback" not in r.stderr
    nocols = tmp_path / "nocols.jsonl"
    nocols.write_text(json.dumps({"body": "hello", "label": "a"}) + "\n")
    r = run("finetune", *common, "--data.train_file", str(nocols), ok=False)
    assert r.returncode == 1 and "cannot tell which columns hold the text" in r.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run("finetune", *common, "--data.train_file", str(empty), ok=False)
    assert r.returncode == 1 and f"{empty}: no usable rows" in r.stderr


def test_a_hub_model_offline_is_a_clear_error(tmp_path):
    "Offline, a hub id (encoder or tokenizer) ends with one message saying what to pass instead, not the hub's traceback."
    r = run(
        "finetune",
        "--model.backbone",
        "no-such-org/no-such-model",
        "--data.train_file",
        "sample:nli-train",
        "--trainer.output_dir",
        str(tmp_path / "run"),
        ok=False,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "'no-such-org/no-such-model' is not a local folder, and offline mode is on" in r.stderr
    assert "a bundle written by llmstart" in r.stderr
    with pytest.raises(UsageError, match="is not a local folder"):
        FT.load_encoder_classifier("no-such-org/no-such-model", LABELS)


def test_pair_model_refuses_single_texts(snli_files, tmp_path):
    L.seed_everything(0, verbose=False)
    data = ClassificationDataModule(
        str(snli_files / "pairs_train.jsonl"),
        str(snli_files / "pairs_val.jsonl"),
        tokenizer=minilm_path(),
        labels=LABELS,
        batch_size=32,
    )
    model = FT.SequenceClassifier(minilm_path())
    make_trainer(
        tmp_path,
        max_steps=1,
        logger=False,
        progress_bar=False,
        monitor=None,
        limit_val_batches=1,
        enable_model_summary=False,
    ).fit(model, data)
    bundle = model.save_bundle(tmp_path / "bundle", data.tokenizer)
    with pytest.raises(DataError, match="trained on sentence pairs"):
        FT.evaluate_classifier(bundle, str(snli_files / "text_val.jsonl"))
