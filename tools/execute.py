#!/usr/bin/env python
"""Run notebooks top to bottom and save their outputs in place (the documentation shows the saved outputs), then clean them.

    python tools/execute.py nbs/00_data.ipynb [more.ipynb ...]

Runs offline at the tiny scale unless the environment says otherwise; stops at the first error. Like `nbdev_test`, it
skips cells marked `#| eval: false`, and cells flagged `#| gpu` when there is no GPU.
"""

import os, re, subprocess, sys, time
from pathlib import Path

for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}.items():
    os.environ.setdefault(k, v)
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sys.exit(__doc__)
    for path in paths:
        os.chdir(path.parent)
        nb, t0 = read_nb(path), time.perf_counter()
        import torch

        skip_flags = "eval:\\s*false" + ("" if torch.cuda.is_available() else "|gpu")
        skip = lambda cell: cell.cell_type == "code" and re.search(rf"^#\|\s*({skip_flags})\s*$", cell.source, re.M)
        for cell in nb.cells:  # execnb keeps a cell's old outputs when it prints nothing now: start from none
            if cell.cell_type == "code" and not skip(cell):
                cell.outputs = []
        CaptureShell(path).run_all(nb, exc_stop=True, preproc=skip)
        write_nb(nb, path)
        print(f"{path.name}: ran in {time.perf_counter() - t0:.1f} s")
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean")], check=True, cwd=paths[0].parent)
