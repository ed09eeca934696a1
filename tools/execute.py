#!/usr/bin/env python
"""Run notebooks top to bottom and save their outputs in place (the documentation shows the saved outputs), then clean them.

    python tools/execute.py [--timings FILE] nbs/00_data.ipynb [more.ipynb ...]

Runs offline at the tiny scale unless the environment says otherwise; stops at the first error. Like `nbdev_test`, it
skips cells marked `#| eval: false`, and cells flagged `#| gpu` when there is no GPU. `--timings FILE` records each
notebook's seconds there (tools/run_times.py states them in the chapters), each notebook run in a fresh process as in
a reader's fresh kernel, imports included: run nothing else meanwhile.
"""

import json, os, re, subprocess, sys, time
from pathlib import Path

for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}.items():
    os.environ.setdefault(k, v)
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

if __name__ == "__main__":
    args = sys.argv[1:]
    timings = Path(args.pop(args.index("--timings") + 1)).resolve() if "--timings" in args else None
    args = [a for a in args if a != "--timings"]
    paths = [Path(p).resolve() for p in args] or sys.exit(__doc__)
    if timings and len(paths) > 1:  # each in a fresh process, as a reader's fresh kernel: its imports timed too
        for path in paths:
            subprocess.run([sys.executable, __file__, "--timings", str(timings), str(path)], check=True)
        sys.exit(0)
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
        seconds = time.perf_counter() - t0
        print(f"{path.name}: ran in {seconds:.1f} s", flush=True)
        if timings:
            old = json.loads(timings.read_text()) if timings.exists() else {"notebooks": {}}
            old["machine"] = f"{os.cpu_count()} CPU cores"
            old["notebooks"][path.name] = round(seconds, 1)
            timings.write_text(json.dumps(old, indent=1) + "\n")
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean")], check=True, cwd=paths[0].parent)
