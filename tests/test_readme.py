"""README.md's commands, run as a user runs them: every ```sh block of the README in order, in a fresh working directory
(the install lines and the test command are left to CI, which runs exactly those), then its Python blocks. `llmstart
serve` runs until stopped, so it is started in the background, the commands after it talk to it, and it is stopped at
the end with Ctrl-C. The figures of the README's tiny-scale results table are then checked against the run's own
`llmstart pipeline` report."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, llmstart_exe

README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.M | re.S)


def commands(block: str) -> list[str]:
    "The commands of a shell block: continuation lines joined, comments and blank lines dropped."
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def user_commands() -> list[str]:
    out = []
    for block in blocks("sh"):
        for cmd in commands(block):
            if cmd.startswith("pip install") or "nbdev_test" in cmd: continue   # CI's own steps
            out.append(cmd)
    return out


def test_the_readme_has_the_commands_it_promises():
    cmds = user_commands()
    assert cmds[0] == "llmstart pipeline", cmds               # the main command comes first
    for name in ["data", "tokenizer", "pretrain", "evaluate", "finetune", "compress", "serve"]:
        assert any(c.startswith(f"llmstart {name} ") for c in cmds), name


def _table(heading: str) -> dict[str, list[str]]:
    "The first Markdown table under `heading`, as {first cell: cells}."
    lines = README.split(heading, 1)[1].splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return {cells[0]: cells for cells in ([c.strip() for c in r.strip("|").split("|")] for r in lines[start + 2:end])}


def _number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m[1].replace(",", ""))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    "Run every README command in order in a fresh folder; returns (folder, [(command, completed process)])."
    from llmstart.deployment import free_port, port_in_use
    import httpx
    cwd = tmp_path_factory.mktemp("readme-user")
    env = {**os.environ, "PATH": f"{Path(llmstart_exe()).parent}{os.pathsep}{os.environ['PATH']}"}
    port, server, results = free_port(), None, []
    try:
        for cmd in user_commands():
            cmd = cmd.replace("localhost:8000", f"localhost:{port}")   # 8000 may be taken on a shared machine
            if cmd.startswith("llmstart serve"):
                log = (cwd / "serve.log").open("w")
                server = subprocess.Popen(cmd + f" --port {port}", shell=True, cwd=cwd, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
                for _ in range(240):
                    assert server.poll() is None, (cwd / "serve.log").read_text()[-3000:]
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200: break
                    except httpx.HTTPError: pass
                    time.sleep(0.5)
                else: pytest.fail("llmstart serve did not answer /health in 120 s")
                results.append((cmd, None)); continue
            r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            results.append((cmd, r))
            assert r.returncode == 0, f"$ {cmd}\n{r.stderr[-3000:]}"
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)                   # Ctrl-C, as the README says (to the shell and the server)
            try: server.wait(30)
            except subprocess.TimeoutExpired: pass
            try: os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError: pass
            server.wait()
    for _ in range(50):
        if not port_in_use(port): break
        time.sleep(0.2)
    assert not port_in_use(port), "the server's port is still in use after Ctrl-C"
    return cwd, results


def test_every_command_succeeds(session):
    cwd, results = session
    ran = [c for c, r in results if r is not None]
    assert len(ran) == len(user_commands()) - 1      # all but the server, which ran in the background


def test_commands_print_what_the_readme_says(session):
    cwd, results = session
    out = {c.split()[1] + (":" + c.split()[3] if c.startswith("llmstart evaluate") else ""): r
           for c, r in results if r is not None and c.startswith("llmstart")}
    assert json.loads(out["data"].stdout)["rows"] == 2000
    assert json.loads(out["tokenizer"].stdout)["vocab_size"] <= 8000 and (cwd / "my-tokenizer" / "tokenizer.json").exists()
    assert json.loads(out["evaluate:runs/tiny-mlm/bundle"].stdout)["perplexity"] > 1
    assert json.loads(out["evaluate:runs/nli"].stdout)["accuracy"] > 0.8       # the tiny pretrained encoder, synthetic pairs
    rows = [json.loads(l) for l in out["compress"].stdout.splitlines() if l.startswith("{")]
    assert [r["variant"] for r in rows] == ["original", "int8"] and rows[1]["size_x"] > 3
    curl = next(r for c, r in results if c.startswith("curl"))
    answer = json.loads(curl.stdout)["predictions"][0]
    assert answer["label"] in ("entailment", "neutral", "contradiction")
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    assert (cwd / "runs" / "pipeline" / "report.json").exists()


def test_python_blocks_run(session):
    cwd, _ = session
    code = "\n".join(blocks("python"))
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'input_ids'" in r.stdout and "entailment" in r.stdout, r.stdout


def test_results_table_holds_on_this_run(session):
    "The tiny-scale table is a measurement, not a promise: a new run must reproduce it (timings excepted)."
    cwd, _ = session
    table = _table("### Tiny scale")
    assert list(table) == ["tokenizer", "pretrain", "finetune", "compress", "export", "serve"]
    now = {s["stage"]: s for s in json.loads((cwd / "runs" / "pipeline" / "report.json").read_text())["stages"]}
    # sizes: the vocabulary moves by a few pieces between runs (tokenizers#1794); nothing else does
    for stage in ["pretrain", "finetune", "compress", "export"]:
        assert now[stage]["size_mb"] == pytest.approx(float(table[stage][2]), rel=0.02), stage
    assert now["tokenizer"]["metrics"]["vocab_size"] == pytest.approx(_number(table["tokenizer"][1], r"([\d,]+) pieces"), abs=20)
    assert now["tokenizer"]["metrics"]["tokens_per_word"] == pytest.approx(_number(table["tokenizer"][1], r"([\d.]+) tokens per"), abs=0.05)
    ppl = _number(table["pretrain"][1], r"perplexity ([\d,.]+)")
    assert 0.6 * ppl < now["pretrain"]["metrics"]["val_perplexity"] < 1.5 * ppl
    assert now["finetune"]["metrics"]["test_accuracy"] >= _number(table["finetune"][1], r"test accuracy ([\d.]+)") - 0.05
    assert now["compress"]["metrics"]["size_x"] == pytest.approx(_number(table["compress"][1], r"([\d.]+)x smaller"), abs=0.15)
    assert now["compress"]["metrics"]["agreement"] >= _number(table["compress"][1], r"float on ([\d.]+)%") / 100 - 0.03
    assert now["export"]["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert now["serve"]["metrics"]["exit_code"] == 0
