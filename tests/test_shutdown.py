"""Both servers stop on the signals supervisors send. SIGTERM (`docker stop`, systemd, Kubernetes) and SIGINT (Ctrl-C,
also when a script started the server in the background, which hands SIGINT down ignored) end the main process and
every worker, free the port and exit 0 within seconds -- and the requests in flight at that moment are finished."""

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from llmstart.data import minilm_path
from llmstart.deployment import free_port, port_in_use
from llmstart.finetuning import SequenceClassifier
from llmstart.alignment import SFT
from test_assistant import _base


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    "A classifier bundle (MiniLM, untrained head: these tests are about processes) and a chat bundle."
    d = tmp_path_factory.mktemp("shutdown")
    labels = ["entailment", "neutral", "contradiction"]
    from transformers import AutoTokenizer

    SequenceClassifier(minilm_path(), labels=labels).save_bundle(
        d / "classifier", AutoTokenizer.from_pretrained(minilm_path())
    )
    corpus = (Path(__file__).parent.parent / "llmstart/samples/corpus.txt").read_text().splitlines()
    _base(d / "base", corpus, block_size=1024, n_embd=128, n_layer=4, seed=3, endless=True)
    SFT(str(d / "base")).save_bundle(d / "chat")
    return d


class Served:
    """`llmstart serve` as a supervisor or a script starts it: in its own session, in the foreground (a child of this
    process), or in the background of a bash script (`llmstart serve ... &`, SIGINT ignored, as the shell does)."""

    def __init__(self, model, tmp: Path, background: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "llmstart.cli", "serve", "--model", str(model), "--port", str(self.port)]
        self.log = tmp / f"serve-{self.port}.log"
        pidfile = tmp / f"serve-{self.port}.pid"
        if background:
            script = f"{shlex.join(args)} > {self.log} 2>&1 &\necho $! > {pidfile}\nwait $!"
            self.proc = subprocess.Popen(["bash", "-c", script], start_new_session=True)
        else:
            self.proc = subprocess.Popen(
                args, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        self.pid = int(pidfile.read_text()) if background else self.proc.pid
        if background:
            # bash starts a background job with SIGINT and SIGQUIT ignored; the server took SIGINT back
            assert signal.SIGQUIT in _ignored(self.pid) and signal.SIGINT not in _ignored(self.pid)
        self.session = os.getsid(self.proc.pid)

    def processes(self) -> list:
        "This server's processes still alive (zombies count as gone)."
        alive = []
        for p in psutil.process_iter(["pid", "status"]):
            try:
                if os.getsid(p.pid) == self.session and p.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        return alive

    def kill(self):
        for p in self.processes():
            p.kill()


def _ignored(pid: int) -> set:
    "The signals process `pid` started with ignored (its SigIgn mask)."
    mask = int(
        next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("SigIgn")).split()[1], 16
    )
    return {s for s in signal.Signals if mask >> (s - 1) & 1}


def stop(served: Served, sig: signal.Signals, in_flight) -> tuple[int, float]:
    "Send `sig` to the server's main process while `in_flight()` requests run; wait for the exit; check nothing is left."
    t0 = time.perf_counter()
    os.kill(served.pid, sig)
    try:
        code = served.proc.wait(30)
    except subprocess.TimeoutExpired:
        served.kill()
        pytest.fail(f"still running 30 s after {sig.name}:\n" + served.log.read_text()[-3000:])
    seconds = time.perf_counter() - t0
    deadline = time.time() + 10
    while served.processes() and time.time() < deadline:
        time.sleep(0.1)
    left = served.processes()
    served.kill()
    assert not left, f"left running after {sig.name}: {[p.cmdline() for p in left]}"
    assert not port_in_use(served.port)
    return code, seconds


def chat_in_flight(url: str, n: int = 4) -> tuple[list, threading.Event]:
    "Start `n` streamed replies of 500 tokens; their outcomes, and the threads."
    results = []
    body = {
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 500,
        "temperature": 0,
        "stream": True,
    }

    def one():
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
                lines = [line for line in r.iter_lines() if line]
                results.append((r.status_code, lines[-1] if lines else ""))
        except httpx.HTTPError as e:
            results.append((type(e).__name__, ""))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return results, threads


def classifier_in_flight(url: str, n: int = 8) -> tuple[list, list]:
    "Start `n` requests of 64 pairs each (long enough to be in flight when the signal comes); outcomes and end times."
    results = []
    body = {"inputs": [{"premise": "A man plays a guitar on stage.", "hypothesis": "Music is played."}] * 64}

    def one():
        try:
            results.append((httpx.post(url + "/predict", json=body, timeout=60).status_code, time.perf_counter()))
        except httpx.HTTPError as e:
            results.append((type(e).__name__, time.perf_counter()))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return results, threads


@pytest.mark.parametrize("sig,background", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_chat_server_stops_on_the_signal_and_finishes_replies_in_flight(bundles, tmp_path, sig, background):
    served = Served(bundles / "chat", tmp_path, background)
    results, threads = chat_in_flight(served.url)
    for _ in range(100):  # the replies are under way
        if httpx.get(served.url + "/info").json()["active"] == 4:
            break
        time.sleep(0.05)
    assert httpx.get(served.url + "/info").json()["active"] == 4
    code, seconds = stop(served, sig, results)
    for t in threads:
        t.join(30)
    assert code == 0 and seconds < 15, (code, seconds, served.log.read_text()[-2000:])
    assert results == [(200, "data: [DONE]")] * 4  # every reply in flight was finished


@pytest.mark.parametrize("sig,background", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_classifier_server_stops_on_the_signal_with_requests_in_flight(bundles, tmp_path, sig, background):
    served = Served(bundles / "classifier", tmp_path, background)
    assert len(served.processes()) >= 3  # the main process, LitServe's HTTP server, its inference worker, ...
    results, threads = classifier_in_flight(served.url)
    time.sleep(0.5)  # sent and taken by the server; the model is still working through them
    signalled = time.perf_counter()
    code, seconds = stop(served, sig, results)
    for t in threads:
        t.join(30)
    assert code == 0 and seconds < 15, (code, seconds, served.log.read_text()[-2000:])
    assert [r for r, _ in results] == [200] * 8, results  # every request in flight was answered
    assert max(t for _, t in results) > signalled  # (some of them after the signal)
    with pytest.raises(httpx.ConnectError):  # and nothing more is taken
        httpx.post(served.url + "/predict", json={"text": "x"}, timeout=5)
