"""The literate project's own rules: the runtime package, the notebooks, the sidebar, the README."""

import ast
import json
import re
import subprocess
import sys
from configparser import ConfigParser

from conftest import ROOT

NBS = ROOT / "nbs"
NOTEBOOKS = sorted(p for p in NBS.glob("*.ipynb"))
GUIDES = sorted(p for p in (NBS / "guides").glob("*.ipynb"))


def settings():
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return cfg["DEFAULT"]


def test_runtime_package_never_imports_dev_tools():
    mods = [p.stem for p in (ROOT / "llmstart").glob("*.py") if not p.stem.startswith("_")]
    code = (
        f"import sys, importlib\nfor m in {mods!r}: importlib.import_module('llmstart.' + m)\n"
        "print(sorted(m for m in ('nbdev', 'fastcore', 'execnb', 'ghapi') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_star_imports_bring_no_bare_methods():
    """A method taught in its own cell (`patch_method`) stays out of its module's `__all__`: `from llmstart.deployment
    import *` once brought ClassifierAPI's `predict`, which shadowed the library's own `predict`."""
    import importlib
    import inspect

    modules = {p.stem: importlib.import_module(f"llmstart.{p.stem}") for p in (ROOT / "llmstart").glob("[!_]*.py")}
    leaked = [
        f"llmstart.{m}.{n} is {f.__qualname__}"
        for m, mod in modules.items()
        for n in mod.__all__
        if inspect.isfunction(f := getattr(mod, n)) and "." in f.__qualname__
    ]
    assert leaked == []


def test_requirements_are_ranges_and_dev_tools_are_dev_only():
    reqs = settings()["requirements"].split()
    torch = [r for r in reqs if r.startswith("torch")]
    assert torch and "==" not in torch[0]
    assert not [r for r in reqs if re.match(r"(nbdev|fastcore|execnb|ghapi)\b", r)]
    assert all("==" not in r for r in reqs)


def test_every_notebook_is_a_chapter_with_badge_and_colab_install():
    for nb_path in NOTEBOOKS:
        cells = json.loads(nb_path.read_text())["cells"]
        assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), nb_path.name
        assert re.search(r"^> \S", "".join(cells[0]["source"]), re.M), f"{nb_path.name}: no one-line summary"
        badge = f"https://colab.research.google.com/github/llmstart/llmstart/blob/main/nbs/{nb_path.name}"
        assert badge in "".join(cells[1]["source"]), f"{nb_path.name}: no Colab badge for itself"
        first_code = next("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert 'if "google.colab" in str(get_ipython()):' in first_code and "%pip install" in first_code, nb_path.name


def test_every_export_is_documented_and_demonstrated():
    "Each `#| export` cell that defines public names is followed by show_doc or a working example."
    for nb_path in NOTEBOOKS:
        cells = json.loads(nb_path.read_text())["cells"]
        for i, c in enumerate(cells):
            src = "".join(c["source"])
            if c["cell_type"] != "code" or not src.startswith("#| export"):
                continue
            names = [
                n.name
                for n in ast.parse(src).body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")
            ]
            if not names:
                continue
            following = "".join("".join(x["source"]) for x in cells[i + 1 : i + 4] if x["cell_type"] == "code")
            assert any(n in following for n in names), f"{nb_path.name}: cell {i} ({names}) has no show_doc or example"


def test_sidebar_lists_every_notebook_once_in_order():
    "Chapters in file-name order after the home page, then the guide pages (nbs/guides), each listed once."
    listed = re.findall(r"^\s*- (?:\w+: )?([\w./-]+\.ipynb)\s*$", (NBS / "sidebar.yml").read_text(), re.M)
    chapters = [l for l in listed if "/" not in l]
    guides = [l for l in listed if l.startswith("guides/")]
    assert len(listed) == len(chapters) + len(guides) == len(set(listed))
    assert sorted(chapters) == sorted(p.name for p in NOTEBOOKS)
    assert chapters[0] == "index.ipynb" and chapters[1:] == sorted(chapters[1:])
    assert sorted(guides) == sorted(f"guides/{p.name}" for p in GUIDES)
    assert listed.index(guides[0]) > listed.index(chapters[-1])


def test_guide_pages_have_a_title_a_summary_and_link_into_the_chapters():
    for nb_path in GUIDES:
        cells = json.loads(nb_path.read_text())["cells"]
        first = "".join(cells[0]["source"])
        assert first.startswith("# ") and re.search(r"^> \S", first, re.M), nb_path.name
        text = "".join("".join(c["source"]) for c in cells)
        assert re.search(r"\]\(\.\./0\d_\w+\.ipynb\)", text), f"{nb_path.name}: no link to a chapter"


def test_quarto_config_is_the_root_file():
    link = NBS / "_quarto.yml"
    assert link.is_symlink() and link.resolve() == (ROOT / "_quarto.yml").resolve()
    assert 'title: "llmstart"' in (ROOT / "_quarto.yml").read_text()


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_states_the_test_command_ci_runs():
    cmd = subprocess.run([sys.executable, str(ROOT / ".ci" / "test_command.py")], capture_output=True, text=True)
    assert cmd.returncode == 0, cmd.stderr
    assert "nbdev_test" in cmd.stdout and "pytest tests" in cmd.stdout


def test_every_chapter_ends_with_exercises_whose_checks_are_proven():
    """Each chapter lists its exercises from the registry (`exercises("NN")`), at least two of them, and the exercises
    appendix runs every check on a solution (answered True) and on a wrong answer (answered False)."""
    from llmstart.exercises import EXERCISES

    appendix = "\n".join(
        "".join(c["source"])
        for c in json.loads((NBS / "13_exercises.ipynb").read_text())["cells"]
        if c["cell_type"] == "code"
    )
    for nb in NOTEBOOKS:
        chapter = nb.name[:2]
        if not chapter.isdigit() or nb.name.startswith("13_"):
            continue
        code = [("".join(c["source"])) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert any(f'exercises("{chapter}")' in c for c in code[-3:]), (
            f"{nb.name} does not end with exercises({chapter!r})"
        )
        ids = [e for e in EXERCISES if e.startswith(chapter + ".")]
        assert len(ids) >= 2, f"{nb.name} has {len(ids)} exercises"
        for e in ids:
            assert re.search(rf'test_eq\(check\("{re.escape(e)}", \w+\), True\)', appendix), f"{e}: no solution checked"
            assert re.search(rf'test_eq\(check\("{re.escape(e)}", \w+\), False\)', appendix), f"{e}: no wrong answer"
