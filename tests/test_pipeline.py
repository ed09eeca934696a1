"""`llmstart pipeline` end to end as a user runs it: every stage reported, every bundle usable, the server gone after."""

import json
import os
from pathlib import Path

import pytest

from conftest import cli

STAGES = ["tokenizer", "pretrain", "finetune", "compress", "export", "serve"]


def _processes_mentioning(text: str) -> list[str]:
    "Command lines of running processes that contain `text` (from /proc)."
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def run(readme_session):
    """The README's main command, `llmstart pipeline`, as its quick start runs it (conftest.readme_session): the
    completed process, the run's folder and the server's port."""
    cwd, results, _ = readme_session
    proc = next(r for c, r in results if c == "llmstart pipeline")
    out = cwd / "runs" / "pipeline"
    serve = json.loads((out / "report.json").read_text())["stages"][-1]
    return proc, out, int(serve["artefact"].rsplit(":", 1)[1])


def test_exit_status_report_and_progress(run):
    proc, out, _ = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == STAGES and report["status"] == "completed"
    assert report["scale"] == "tiny" and report["config"]["recipe"] == "tiny-mlm"
    table = proc.stdout
    for stage in STAGES:
        assert f"│ {stage}" in table, table
    # the progress display says when each stage starts and ends, in order
    lines = [l for l in proc.stderr.splitlines() if l.startswith("[")]
    starts = [l for l in lines if l.endswith("...")]
    assert [l.split()[1] for l in starts] == STAGES, lines
    assert sum(" done in " in l for l in lines) == 6
    assert (out / "report.md").read_text().count("\n") == 2 + 6


def test_figures_are_real(run):
    proc, out, _ = run
    m = {s["stage"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    tok, pre, ft, q, ex = (m[k]["metrics"] for k in STAGES[:5])
    assert 1000 < tok["vocab_size"] <= 4000 and tok["unk_rate"] < 0.01 and 1 < tok["tokens_per_word"] < 2
    assert pre["steps"] == 300 and pre["val_perplexity"] < tok["vocab_size"] / 2
    assert ft["test_pairs"] == 500 and ft["test_accuracy"] >= 0.6  # synthetic pairs; chance is 1/3
    assert q["size_x"] > 3 and q["agreement"] >= 0.95 and abs(q["accuracy_delta"]) <= 0.02
    assert ex["parity_max_abs_diff"] <= 1e-4
    assert m["compress"]["size_mb"] < m["finetune"]["size_mb"] / 3


def test_bundles_work_with_the_other_commands(run):
    proc, out, _ = run
    report = {s["stage"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    ev = cli("evaluate", "--model", out / "int8", "--data", "sample:nli-val")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["accuracy"] == report["compress"]["metrics"]["accuracy"]
    # the ONNX export answers like the PyTorch bundle it came from
    import numpy as np
    from llmstart.deployment import load_backend
    from llmstart.finetuning import predict

    pair = [("A man sleeps on a sofa.", "A man is awake.")]
    onnx = load_backend(out / "onnx", "onnx")
    logits = onnx({k: v.astype("int64") for k, v in onnx.tokenizer(*zip(*pair), return_tensors="np").items()})[0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(probs, list(predict(out / "finetune" / "bundle", pair)[0]["probabilities"].values()), atol=1e-3)


def test_server_stopped_and_nothing_left_running(run):
    from llmstart.deployment import port_in_use

    proc, out, port = run
    serve = {s["stage"]: s for s in json.loads((out / "report.json").read_text())["stages"]}["serve"]
    assert serve["artefact"] == f"http://127.0.0.1:{port}"
    assert serve["metrics"]["exit_code"] == 0 and serve["metrics"]["port_free"]
    assert not port_in_use(port)
    assert _processes_mentioning("pipeline/int8") == []  # no server, no worker left behind


def test_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    r = cli("pipeline", "--output", tmp_path)
    assert r.returncode == 1 and "holds files that llmstart did not write" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_data_stops_before_training(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text(
        '{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": "entailment"}\n'
        '{"premise": "A cat sleeps.", "hypothesis": "A cat naps.", "label": "maybe"}\n'
    )
    r = cli("pipeline", "--output", tmp_path / "run", "--test-data", bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "test.jsonl, line 2" in r.stderr and "maybe" in r.stderr
    assert "[1/6]" not in r.stderr  # nothing was trained
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "failed" and "line 2" in report["error"] and report["stages"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "huge"], "--scale must be one of tiny, real"),
        (["--pretrain-steps", "0"], "--pretrain-steps must be at least 1"),
        (["--recipe", "no-such-recipe"], "the bundled recipes are"),
    ],
)
def test_bad_options(tmp_path, args, message):
    r = cli("pipeline", "--output", tmp_path / "run", *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_real_scale_needs_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real scale would start")
    r = cli("pipeline", "--scale", "real", "--output", tmp_path / "run")
    assert r.returncode == 1 and "needs a GPU" in r.stderr and "--scale tiny" in r.stderr


def test_hub_splits_are_written_as_files(tmp_path, monkeypatch):
    "The real scale's data path without the hub: a hub id with a split becomes JSON lines with label names."
    import llmstart.pipeline as pl
    from llmstart.data import load_classification

    calls = []

    def fake(source, split=None, **kw):
        calls.append((source, split))
        return load_classification("sample:nli-val")

    monkeypatch.setattr(pl, "load_classification", fake)
    path = pl.local_pairs("stanfordnlp/snli:test", tmp_path)
    assert calls == [("stanfordnlp/snli", "test")] and path.endswith("stanfordnlp_snli_test.jsonl")
    monkeypatch.undo()
    back, ref = load_classification(path), load_classification("sample:nli-val")
    named = lambda ds: [(r["premise"], r["hypothesis"], ds.features["label"].names[r["label"]]) for r in ds]
    assert named(back) == named(ref)
    assert set(json.loads(Path(path).read_text().splitlines()[0])) == {"premise", "hypothesis", "label"}
