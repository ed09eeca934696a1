"""The API contract is true: schemathesis generates requests from each server's `/openapi.json` -- valid ones, invalid
ones, boundary values -- and checks every answer against the schema with all of its checks (`--checks all`): no server
error, documented status codes, content types and bodies, valid data accepted, invalid data rejected."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmstart.alignment import SFT
from llmstart.data import minilm_path
from llmstart.deployment import ServerProcess
from llmstart.finetuning import SequenceClassifier
from test_assistant import _base

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    "A pair classifier (MiniLM, untrained head: the contract does not depend on its answers) and a chat bundle."
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("contract")
    labels = ["entailment", "neutral", "contradiction"]
    model = SequenceClassifier(minilm_path(), labels=labels)
    model.save_bundle(d / "classifier", AutoTokenizer.from_pretrained(minilm_path()))
    corpus = (Path(__file__).parent.parent / "llmstart/samples/corpus.txt").read_text().splitlines()
    _base(d / "base", corpus, block_size=1024, n_embd=64, n_layer=2, seed=1)
    SFT(str(d / "base")).save_bundle(d / "chat")
    return d


def run_schemathesis(url: str, tmp_path: Path, examples: int) -> subprocess.CompletedProcess:
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    cmd = [str(SCHEMATHESIS), "run", url + "/openapi.json", "--checks", "all", "--max-examples", str(examples)]
    cmd += ["--seed", "1", "--report", "junit", "--report-dir", str(tmp_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)


def assert_no_issues(r: subprocess.CompletedProcess, log: str):
    "schemathesis found nothing, in many cases, and the server logged no error."
    assert r.returncode == 0 and "No issues found" in r.stdout, r.stdout[-6000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", r.stdout).groups())
    assert generated == passed >= 200, r.stdout[-2000:]
    assert "Traceback" not in log, log[-3000:]


def test_the_classifier_server_does_what_its_schema_says(bundles, tmp_path):
    with ServerProcess(bundles / "classifier", max_inputs=8, max_text_chars=200) as server:
        r = run_schemathesis(server.url, tmp_path, 100)
        log = server.log.read_text()
    assert_no_issues(r, log)


def test_the_chat_server_does_what_its_schema_says(bundles, tmp_path):
    with ServerProcess(bundles / "chat", max_tokens=16) as server:
        r = run_schemathesis(server.url, tmp_path, 100)
        log = server.log.read_text()
    assert_no_issues(r, log)
