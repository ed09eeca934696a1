#!/usr/bin/env python
"""Process the notebooks for the documentation site, as `nbdev_docs` does before Quarto renders them, and check the result.

Quarto cannot be installed on the project's machines, so a stub `quarto` is put on PATH (nbdev only checks that one
exists before processing); the real site is rendered by .github/workflows/deploy.yaml. Fails when a notebook is not
processed, a page has no title, a saved output is an error, or a link to another page of the site points nowhere.
"""

import json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PROC = ROOT / "nbs", ROOT / "_proc"


def process() -> None:
    stub_dir = Path(tempfile.mkdtemp(prefix="quarto-stub-"))
    stub = stub_dir / "quarto"
    stub.write_text("#!/bin/sh\necho 'quarto stub: only nbdev_proc_nbs runs here' >&2\nexit 0\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}"}
    shutil.rmtree(PROC, ignore_errors=True)
    exe = Path(sys.executable).parent / "nbdev_proc_nbs"
    try:
        subprocess.run([str(exe), "--n_workers", "1"], cwd=ROOT, env=env, check=True)
    finally:  # the stub goes, whether or not the notebooks processed
        shutil.rmtree(stub_dir)


def problems() -> list[str]:
    found = []
    notebooks = sorted(p.relative_to(NBS) for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    pages = {p.with_suffix("") for p in notebooks}
    for rel in notebooks:
        out = PROC / "nbs" / rel if (PROC / "nbs").exists() else PROC / rel
        if not out.exists():
            found.append(f"{rel}: not processed (no {out.relative_to(ROOT)})")
            continue
        cells = json.loads(out.read_text())["cells"]
        front = "".join(cells[0]["source"]) if cells and cells[0]["cell_type"] == "raw" else ""
        if not re.search(r"^title:\s*\S", front, re.M):
            found.append(f"{rel}: the page has no title (start with an H1 cell)")
        for i, c in enumerate(cells):
            for o in c.get("outputs", []):
                if o.get("output_type") == "error":
                    found.append(f"{rel}: cell {i} has an error output ({o.get('ename')})")
            if c["cell_type"] == "markdown":
                for target in re.findall(r"\]\(([^)\s]+?\.(?:ipynb|html|qmd))(?:#[^)]*)?\)", "".join(c["source"])):
                    if target.startswith(("http:", "https:")):
                        continue
                    if Path(os.path.normpath(rel.parent / target)).with_suffix("") not in pages:
                        found.append(f"{rel}: broken link to {target}")
    return found


if __name__ == "__main__":
    process()
    if bad := problems():
        sys.exit("documentation check failed:\n  " + "\n  ".join(bad))
    print(f"documentation check passed: {len(list(NBS.rglob('*.ipynb')))} notebooks processed")
