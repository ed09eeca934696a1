"""The Dockerfile's image, built step by step the way `docker build` would, without a Docker daemon (there is none
here, and its base image could not be pulled): the same Python and torch release, the package installed under the same
constraints (the `installed` fixture's environment: the wheel of the source tree, as `pip install /src` builds it; it
also holds the test encoder and takes this machine's torch 2.13.0 build, not the CPU index's), the image's user added
as its RUN step adds it, and then its CMD run as that user with its ENV -- the server must run as the non-root user,
pass the image's HEALTHCHECK and answer, with the API key the README's `docker run` sets."""

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, finetune_minilm, stop_group, write_snli_parts

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    "The Dockerfile's (INSTRUCTION, arguments), continuation lines joined and comments dropped."
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [l.strip() for l in joined.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]


STEPS = instructions(DOCKERFILE)


def one(kind: str) -> str:
    found = [args for k, args in STEPS if k == kind]
    assert len(found) == 1, f"the Dockerfile has {len(found)} {kind} instructions; this test reproduces one"
    return found[0]


def test_the_steps_this_test_reproduces_are_the_dockerfiles():
    "If the Dockerfile changes, this test must change with it: it checks the steps it stands in for are still these."
    assert one("FROM") == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    runs = [args for k, args in STEPS if k == "RUN"]
    assert runs[0].startswith("pip install torch==2.13.0 ")  # what the `installed` fixture installs (CPU build)
    assert runs[1] == "pip install -c /src/constraints.txt /src && useradd --create-home server"
    assert one("USER") == "server"
    assert ("COPY", ". /src") in STEPS and ("COPY", "${BUNDLE} /bundle") in STEPS
    assert json.loads(one("CMD"))[:3] == ["llmstart", "serve", "--model"]


@pytest.fixture(scope="module")
def image(request, shared):
    """A root folder standing for the image: the bundle at its /bundle, the `installed` environment as its Python, and
    the image's user; yields (root, user, environment's bin)."""
    if os.geteuid() != 0:
        pytest.skip("adding the image's user (its `useradd` step) needs root, as docker build has")
    _, bin_dir = request.getfixturevalue("installed")  # only once it is known to be needed: it takes minutes
    user = one("USER")
    created = subprocess.run(["id", "-u", user], capture_output=True).returncode != 0
    if created:
        useradd = next(a for k, a in STEPS if k == "RUN" and "useradd" in a).split("&&")[-1].strip()
        subprocess.run(shlex.split(useradd), check=True)
    assert pwd.getpwnam(user).pw_uid != 0
    root = Path(tempfile.mkdtemp(prefix="llmstart-image-"))
    opened = []
    try:
        # the user must reach the environment and its interpreter, as every user of an image can (here the interpreter
        # may sit under /root): let it through, not list, each folder above them, for the test's length
        python = (bin_dir / "python").resolve()
        for d in sorted({*bin_dir.parents, bin_dir, *python.parents} - {Path("/")}):
            if not d.stat().st_mode & 0o001:
                opened.append((d, d.stat().st_mode))
                d.chmod(d.stat().st_mode | 0o001)
        root.chmod(0o755)
        write_snli_parts(shared("snli_dev.jsonl"), root, {"train": range(96)})
        bundle = finetune_minilm(root / "train.jsonl", root / "build")
        shutil.copytree(bundle, root / "bundle")  # COPY ${BUNDLE} /bundle
        subprocess.run(["chmod", "-R", "a+rX", str(root / "bundle")], check=True)
        yield root, user, bin_dir
    finally:
        for d, mode in reversed(opened):
            d.chmod(mode)
        shutil.rmtree(root, ignore_errors=True)
        if created:
            subprocess.run(["userdel", "-r", user], capture_output=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_image_serves_as_its_user(image):
    root, user, bin_dir = image
    port = free_port()
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": pwd.getpwnam(user).pw_dir}
    for args in (a for k, a in STEPS if k == "ENV"):
        env |= dict(kv.split("=", 1) for kv in shlex.split(args))
    env |= {"LLMSTART_API_KEY": "change-me", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    env["TMPDIR"] = str(root / "tmp")  # the image's own /tmp: what the server writes there goes with the image
    cmd = [str(root / "bundle") if a == "/bundle" else str(port) if a == "8000" else a for a in json.loads(one("CMD"))]
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen(
        ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=env["HOME"],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the server did not become healthy:\n" + (root / "serve.log").read_text()[-3000:])
        # every process of the server runs as the image's user, none as root
        uid = pwd.getpwnam(user).pw_uid
        pids = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        served = [p for p in pids if p != str(proc.pid)]  # all but runuser itself, which starts them as the user
        assert served, pids
        for p in served:
            uids = next(l for l in Path(f"/proc/{p}/status").read_text().splitlines() if l.startswith("Uid:"))
            assert set(uids.split()[1:]) == {str(uid)}, (p, uids)
        # the image's HEALTHCHECK, run as the user
        check = shlex.split(re.sub(r"^.*?\bCMD\s+", "", one("HEALTHCHECK")))
        check = [a.replace(":8000/", f":{port}/") for a in check]
        r = subprocess.run(["runuser", "-u", user, "--", "env", "-i", f"PATH={env['PATH']}", *check], timeout=30)
        assert r.returncode == 0
        # it answers, with the key `docker run -e LLMSTART_API_KEY=...` set, and only with it
        body = {"inputs": [{"premise": "A man plays a guitar on stage.", "hypothesis": "A man is playing music."}]}
        assert httpx.post(url + "/predict", json=body, timeout=30).status_code == 401
        ok = httpx.post(url + "/predict", json=body, headers={"X-API-Key": "change-me"}, timeout=60)
        assert ok.status_code == 200, ok.text
        assert ok.json()["predictions"][0]["label"] in ("entailment", "neutral", "contradiction")
    finally:
        stop_group(proc)
        log.close()
