#!/usr/bin/env python
"""Run notebooks top to bottom and save their outputs in place (the documentation shows the saved outputs), then clean them.

    python tools/execute.py nbs/00_data.ipynb [more.ipynb ...]

Runs offline at the tiny scale unless the environment says otherwise; stops at the first error.
"""
import os, subprocess, sys, time
from pathlib import Path

for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}.items(): os.environ.setdefault(k, v)
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sys.exit(__doc__)
    for path in paths:
        os.chdir(path.parent)
        nb, t0 = read_nb(path), time.perf_counter()
        CaptureShell(path).run_all(nb, exc_stop=True)
        write_nb(nb, path)
        print(f"{path.name}: ran in {time.perf_counter() - t0:.1f} s")
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean")], check=True, cwd=paths[0].parent)
