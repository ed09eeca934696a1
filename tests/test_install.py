"""The package as users get it: the wheel and sdist that `python -m build` makes (what the release workflow publishes),
installed -- not editable -- into a fresh virtual environment (conftest.installed). The README's commands, `llmstart
pipeline` first, run from that installation in a folder outside the checkout (tests/test_readme.py)."""

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from conftest import ROOT


def test_the_wheel_carries_the_package_its_samples_and_recipes(installed):
    dist, _ = installed
    names = set(zipfile.ZipFile(next(dist.glob("llmstart-*.whl"))).namelist())
    for f in [
        "llmstart/core.py",
        "llmstart/cli.py",
        "llmstart/samples/corpus.txt",
        "llmstart/samples/nli_train.jsonl",
        "llmstart/samples/nli_val.jsonl",
        "llmstart/configs/tiny-mlm.yaml",
    ]:
        assert f in names, f
    assert not [n for n in names if n.startswith(("nbs/", "tests/")) or n.endswith(".ipynb")]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "llmstart = llmstart.cli:main" in zipfile.ZipFile(next(dist.glob("llmstart-*.whl"))).read(entry).decode()
    sdist = {m.split("/", 1)[1] for m in tarfile.open(next(dist.glob("llmstart-*.tar.gz"))).getnames() if "/" in m}
    assert {"setup.py", "settings.ini", "README.md", "LICENSE", "llmstart/samples/corpus.txt"} <= sdist


def test_twine_accepts_both(installed):
    dist, _ = installed
    r = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.count("PASSED") == 2, r.stdout + r.stderr


def test_the_installed_package_is_not_the_checkout(installed, tmp_path):
    _, bin_dir = installed
    code = (
        "import llmstart, llmstart.core, sys; print(llmstart.__file__); "
        "print(sorted(m for m in ('nbdev', 'fastcore', 'execnb') if m in sys.modules))"
    )
    r = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    where, dev_tools = r.stdout.strip().splitlines()
    where = Path(where).resolve()
    assert where.is_relative_to(bin_dir.parent.resolve()) and not where.is_relative_to(ROOT.resolve())
    assert dev_tools == "[]"
    version = subprocess.run([str(bin_dir / "llmstart"), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("llmstart ")
