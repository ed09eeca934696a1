"""`llmstart pipeline --track decoder` end to end as a user runs it: tokenizer, GPT pretraining, SFT, DPO, evaluation
and the chat server, every stage reported with real figures, the bundles usable by the other commands, nothing left
running."""

import json

import pytest

from conftest import cli
from test_pipeline import _processes_mentioning

STAGES = ["tokenizer", "pretrain", "sft", "dpo", "eval", "serve"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder") / "run"
    proc = cli("pipeline", "--track", "decoder", "--output", out)
    return proc, out


def test_exit_status_report_and_progress(run):
    proc, out = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == STAGES and report["status"] == "completed"
    assert report["track"] == "decoder" and report["scale"] == "tiny"
    for stage in STAGES:
        assert f"│ {stage}" in proc.stdout, proc.stdout
    starts = [l for l in proc.stderr.splitlines() if l.startswith("[") and l.endswith("...")]
    assert [l.split()[1] for l in starts] == STAGES, proc.stderr[-2000:]


def test_figures_are_real(run):
    _, out = run
    m = {s["stage"]: s["metrics"] for s in json.loads((out / "report.json").read_text())["stages"]}
    assert m["tokenizer"]["vocab_size"] < 300 and m["tokenizer"]["held_out"] == 200
    assert m["pretrain"]["steps"] == 100 and m["pretrain"]["val_perplexity"] < 20
    assert m["sft"]["exact_match"] >= 0.8 and m["sft"]["base_exact_match"] <= 0.05  # instruction tuning works
    assert m["dpo"]["pairs"] > 50 and m["dpo"]["exact_match"] >= 0.8
    assert 0 <= m["dpo"]["reward_accuracy"] <= 1
    assert m["eval"]["exact_match"] == m["dpo"]["exact_match"] and m["eval"]["perplexity"] > 1
    assert m["serve"]["exit_code"] == 0 and m["serve"]["port_free"]


def test_bundles_work_with_the_other_commands(run):
    _, out = run
    report = {s["stage"]: s["metrics"] for s in json.loads((out / "report.json").read_text())["stages"]}
    ev = cli("eval", "--model", out / "dpo" / "bundle", "--data", out / "data" / "sft-test.jsonl")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["exact_match"] == round(report["eval"]["exact_match"], 5)
    gen = cli("generate", "--model", out / "sft" / "bundle", "--prompt", "The morning", "--max-new-tokens", "20")
    assert gen.returncode == 0 and gen.stdout.startswith("The morning"), gen.stderr[-2000:]
    assert _processes_mentioning(str(out / "dpo")) == []  # the server is gone


@pytest.mark.parametrize(
    "args, message",
    [
        (["--track", "sideways"], "--track must be one of encoder, decoder"),
        (["--track", "decoder", "--train-data", "x.jsonl"], "--train_data: the encoder track's options"),
    ],
)
def test_bad_options(tmp_path, args, message):
    r = cli("pipeline", "--output", tmp_path / "run", *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
