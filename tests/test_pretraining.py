"""Chapter 4: masking statistics on real text, perplexity, a real character-level run, DDP, the pretrain CLI end to end."""

import json
import math
import os
import subprocess
from collections import Counter

import lightning as L
import pytest
import torch

from llmstart import pretraining as P
from llmstart.data import LanguageModelingDataModule, load_corpus
from llmstart.embeddings import train_tokenizer
from llmstart.training import make_trainer
from conftest import cli, llmstart_exe


@pytest.fixture(scope="module")
def wiki_tok(shared):
    return train_tokenizer(str(shared("wikitext2_valid.txt")), "wordpiece", vocab_size=4000)


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_statistics_on_real_text(shared, wiki_tok, whole_word):
    dm = LanguageModelingDataModule(
        str(shared("wikitext2_valid.txt")), tokenizer=wiki_tok, block_size=128, batch_size=64
    )
    dm.setup()
    original = torch.stack([dm.train_ds[i]["input_ids"] for i in range(1500)])
    collator = P.MaskedLMCollator(wiki_tok, whole_word=whole_word)
    torch.manual_seed(0)
    batch = collator([{"input_ids": x} for x in original])
    s = P.masking_stats(batch["input_ids"], original, batch["labels"], wiki_tok.mask_token_id, wiki_tok.all_special_ids)
    assert s["chosen"] > 25_000
    assert abs(s["chosen_fraction"] - 0.15) < 0.005
    assert abs(s["to_mask"] - 0.8) < 0.01 and abs(s["to_random"] - 0.1) < 0.01 and abs(s["unchanged"] - 0.1) < 0.01
    assert s["labels_ok"] and s["specials_never_chosen"]
    # labels are -100 exactly where nothing was chosen, and unchosen inputs are untouched
    untouched = batch["labels"] == -100
    assert torch.equal(batch["input_ids"][untouched], original[untouched])
    if whole_word:  # a word's pieces share one fate
        words = collator.word_ids(original)
        chosen = ~untouched
        special = torch.isin(original, torch.tensor(wiki_tok.all_special_ids))
        for r in range(50):
            for w in words[r].unique():
                sel = (words[r] == w) & ~special[r]
                assert chosen[r][sel].all() or not chosen[r][sel].any()


def test_padding_and_pair_separators_are_never_masked(wiki_tok):
    pairs = [wiki_tok("the city of york", "it was built ."), wiki_tok("a war", "the end of the season was near")]
    collator = P.MaskedLMCollator(wiki_tok, mlm_probability=0.99)
    batch = collator([{**p, "next_sentence_label": i} for i, p in enumerate(pairs)])
    special = torch.isin(collator.pad(pairs)["input_ids"], torch.tensor(wiki_tok.all_special_ids))
    assert (batch["labels"][special] == -100).all() and (batch["labels"][~special] != -100).sum() > 10
    assert batch["next_sentence_label"].tolist() == [0, 1]
    real = batch["attention_mask"][0].bool()  # the shorter pair is padded: segment B's type ends where its tokens do
    assert (
        batch["token_type_ids"][0][real][-1] == 1 and (batch["token_type_ids"][0][~real] == 0).all() and (~real).any()
    )


def test_deterministic_masking_is_stable(wiki_tok):
    ids = wiki_tok(["the city of york was built in the year of the war"] * 3, return_tensors="pt")["input_ids"]
    c = P.MaskedLMCollator(wiki_tok, deterministic=True, mlm_probability=0.5)
    a, b = c([{"input_ids": x} for x in ids]), c([{"input_ids": x} for x in ids.flip(0)])
    assert torch.equal(a["labels"], b["labels"].flip(0))


def test_sentence_pairs(shared):
    docs = list(load_corpus(shared("wikitext2_valid.txt"))["text"])
    for task in ("nsp", "sop"):
        pairs = P.make_sentence_pairs(docs, task, seed=0)
        labels = Counter(p["next_sentence_label"] for p in pairs)
        assert len(pairs) > 1000 and abs(labels[0] - labels[1]) < 0.06 * len(pairs)
    sop = P.make_sentence_pairs(docs, "sop", seed=0)
    text = "\n".join(docs)
    in_order = [p for p in sop if p["next_sentence_label"] == 0][:100]
    swapped = [p for p in sop if p["next_sentence_label"] == 1][:100]
    assert all(p["a"] + " " + p["b"] in text for p in in_order)
    assert all(p["b"] + " " + p["a"] in text for p in swapped)


def test_perplexity_is_exp_of_the_token_weighted_loss(wiki_tok, shared):
    L.seed_everything(0, verbose=False)
    dm = LanguageModelingDataModule(str(shared("wikitext2_valid.txt")), tokenizer=wiki_tok, block_size=32, batch_size=7)
    model = P.MaskedLM(wiki_tok, hidden_size=32, num_layers=1, num_heads=2, max_positions=32)
    trainer = make_trainer(logger=False, progress_bar=False, limit_val_batches=20, monitor=None)
    logged = trainer.validate(model, dm, verbose=False)[0]
    total = count = 0
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(dm.val_dataloader()):
            if i == 20:
                break
            out = model.forward_loss(batch)
            total += float(out["loss"]) * int(out["n"])
            count += int(out["n"])
    assert logged["val_ppl"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_character_lm_beats_the_unigram_entropy(shared, tmp_path):
    path = shared("tinyshakespeare.txt")
    text = path.read_text()
    counts = Counter(text)
    entropy = -sum(c / len(text) * math.log(c / len(text)) for c in counts.values())  # nats per character
    tok = train_tokenizer(load_corpus(path, by="file"), "char", vocab_size=500)
    L.seed_everything(0, verbose=False)
    dm = LanguageModelingDataModule(str(path), tokenizer=tok, by="file", block_size=64, batch_size=12)
    model = P.CausalLM(tok, n_layer=2, n_head=4, n_embd=128, block_size=64, lr=2e-3, warmup=30, betas=(0.9, 0.99))
    trainer = make_trainer(
        tmp_path,
        max_steps=300,
        val_check_interval=300,
        check_val_every_n_epoch=None,
        limit_val_batches=60,
        logger=False,
        progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    val = float(trainer.callback_metrics["val_loss"])
    assert 3.0 < entropy < 3.5
    assert val < entropy - 0.6, (val, entropy)  # well below what character frequencies alone give
    bundle = model.save_bundle(tmp_path / "bundle")
    (tmp_path / "val.txt").write_text(text[int(len(text) * 0.9) :])
    ev = P.evaluate_language_model(bundle, str(tmp_path / "val.txt"), limit=60 * 12)
    assert abs(ev["loss"] - val) < 0.1 and ev["perplexity"] == pytest.approx(math.exp(ev["loss"]), rel=1e-3)


def run_cli(*args, process=False):
    "`llmstart *args` in this process, or (`process`: DDP relaunches its own command line) as the console script."
    r = subprocess.run([llmstart_exe(), *args], capture_output=True, text=True, timeout=900) if process else cli(*args)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_pretrain_bundle_evaluate_end_to_end(tmp_path):
    out = run_cli(
        "pretrain",
        "--config",
        "tiny-mlm",
        "--trainer.max_steps",
        "40",
        "--trainer.val_check_interval",
        "20",
        "--trainer.output_dir",
        str(tmp_path / "run"),
        "--trainer.progress_bar",
        "false",
    )
    bundle = tmp_path / "run" / "bundle"
    assert out["bundle"] == str(bundle) and out["steps"] == 40 and out["world_size"] == 1
    assert 5.0 < out["val_loss"] < math.log(4000) + 0.5 and out["val_ppl"] == pytest.approx(
        math.exp(out["val_loss"]), rel=1e-3
    )
    info = json.loads((bundle / "llmstart.json").read_text())
    assert info["task"] == "masked-lm" and info["block_size"] == 64 and (bundle / "model.safetensors").exists()
    ev = run_cli("evaluate", "--model", str(bundle), "--data", "sample:corpus")
    assert ev["task"] == "masked-lm" and ev["tokens"] > 1000
    assert abs(ev["loss"] - out["val_loss"]) < 0.5  # the whole corpus vs its held-out tenth: close, not equal
    # the same command again resumes the finished run instead of starting over
    r = cli(
        "pretrain",
        "--config",
        "tiny-mlm",
        "--trainer.max_steps",
        "40",
        "--trainer.output_dir",
        tmp_path / "run",
        "--trainer.progress_bar",
        "false",
    )
    assert r.returncode == 0 and "resuming from" in r.stderr and "at step 40" in r.stderr


def ddp_options(shared) -> list[str]:
    "The same 150-step run of the shakespeare-char recipe on the CPU, whatever the processes."
    return [
        "--config",
        "shakespeare-char",
        "--data.source",
        str(shared("tinyshakespeare.txt")),
        "--trainer.max_steps",
        "150",
        "--trainer.val_check_interval",
        "150",
        "--trainer.limit_val_batches",
        "40",
        "--trainer.progress_bar",
        "false",
        "--trainer.accelerator",
        "cpu",
    ]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, shared):
    "The run in one process, 24 sequences a step: what the distributed runs, 12 a process, must match."
    out = tmp_path_factory.mktemp("one")
    return run_cli("pretrain", *ddp_options(shared), "--data.batch_size", "24", "--trainer.output_dir", str(out))


def test_ddp_two_processes_matches_one(tmp_path, shared, one_process):
    two = run_cli(
        "pretrain",
        *ddp_options(shared),
        "--data.batch_size",
        "12",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.output_dir",
        str(tmp_path / "two"),
        process=True,
    )
    one = one_process
    assert one["world_size"] == 1 and two["world_size"] == 2 and one["steps"] == two["steps"] == 150
    # the same effective batch (24 sequences a step): the losses agree within run-to-run noise
    assert abs(one["val_loss"] - two["val_loss"]) < 0.08, (one, two)
    assert two["val_loss"] < 2.8


def test_two_nodes_on_localhost_match_one_process(tmp_path, shared, one_process):
    """Multi-node DDP as a cluster launches it (SLURM, torchrun, or by hand): one `llmstart pretrain` per node with
    --trainer.num_nodes 2, each told its NODE_RANK and where rank 0 listens (MASTER_ADDR, MASTER_PORT); over gloo here."""
    from llmstart.deployment import free_port

    port, procs = free_port(), []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank)}
        cmd = [llmstart_exe(), "pretrain", *ddp_options(shared), "--data.batch_size", "12"]
        cmd += ["--trainer.strategy", "ddp", "--trainer.num_nodes", "2", "--trainer.devices", "1"]
        cmd += ["--trainer.output_dir", str(tmp_path / f"node{rank}")]  # (on a cluster, usually one shared folder)
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    node0 = json.loads(outs[0][0].strip().splitlines()[-1])
    assert outs[1][0].strip() == ""  # only global rank 0 reports
    assert node0["world_size"] == 2 and node0["steps"] == 150
    assert abs(node0["val_loss"] - one_process["val_loss"]) < 0.08, (node0, one_process)


def test_pretrain_bad_input():
    r = cli("pretrain", "--config", "no-such-recipe")
    assert r.returncode != 0 and "the bundled recipes are" in r.stderr and "tiny-mlm" in r.stderr
    r = cli("pretrain", "--config", "tiny-mlm", "--data.init_args.tokenizer", "train:bpe")
    assert r.returncode != 0 and "train:<kind>:<vocab size>" in r.stderr
