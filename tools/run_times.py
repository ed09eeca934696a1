#!/usr/bin/env python
"""Each chapter's expected run time at both scales, stated in the chapter beside its `scale` switch.

    python tools/execute.py --timings /tmp/tiny.json nbs/[0-9]*.ipynb     # tiny: run each chapter alone, timed
    python tools/dry_run.py --json /tmp/dry.json                         # real: its training runs, logged
    python tools/run_times.py --tiny /tmp/tiny.json --dry-run /tmp/dry.json   # writes nbs/run_times.json + the cells
    python tools/execute.py nbs/index.ipynb && python tools/readme.py    # the home page's tables, from that file
    python tools/run_times.py --check     # the chapters and the home page say what nbs/run_times.json says

- **tiny** is measured: a chapter run top to bottom on this machine (all its cores, nothing else running), as a
  reader without a GPU runs it.
- **real** is estimated from FLOPs: the dry run executes the chapter's real path with every training run cut short,
  and logs for each run (`llmstart.training.RunLog`) its parameters, the tokens of one optimizer step and the steps
  the real run takes. A stand-in's parameters, or those of a model made from one, are replaced by the hub model's
  (counted from its architecture, `dry_run.HUB_CONFIGS`). Training costs $6N$ FLOPs a token (forward $2N$, backward
  $4N$); $4N$ when under half of a model's parameters train (LoRA: its frozen weights still pass gradients back); $2N$
  for a frozen model (a distillation teacher). The attention term is left out (under about 10 % at these lengths), and
  embedding lookups are counted as if they were matrix products (about 20 % of BERT-base's parameters). At `UTILISATION` of a GPU's peak dense throughput
  (`GPUS`) that is the training time -- a lower bound where batches are small (under a thousand tokens a step, as in
  fine-tuning on SNLI), which keep a GPU well below that share of its peak; downloading and preparing data come on
  top and are not estimated.
  When bench/gpu.sh has measured a GPU (results/gpu.json), its measured seconds a step are used for that GPU too.
"""

import argparse, functools, hashlib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
TIMES = ROOT / "nbs" / "run_times.json"
MARK = "**Run time.**"
GPUS = {"T4": 65e12, "A100": 312e12}  # peak dense fp16 (T4, which has no bf16) and bf16 tensor-core FLOP/s
UTILISATION = 0.30  # of that peak: nanoGPT's GPT-2 (124M) trains at ~29 % on an RTX 4090 (karpathy/nanoGPT#182)


@functools.cache
def backbone_parameters(repo_id: str, full: bool, layers: int | None = None) -> int:
    """Parameters of the hub model `repo_id`'s backbone (`full`) or of its dry-run stand-in's, with `layers` layers
    (default: its own), counted on the meta device."""
    import torch
    from transformers import AutoModel
    from dry_run import HUB_CONFIGS

    config = HUB_CONFIGS[repo_id](full)
    if layers:
        config.num_hidden_layers = layers
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModel.from_config(config).parameters())


def real_model(model: dict) -> tuple[int, int]:
    """(parameters, trained parameters) of one logged Hugging Face model at the real scale: a stand-in's (or a model
    derived from one, as a distilled student with some of its layers) grown to the hub model's width, layer for layer."""
    from dry_run import HUB_CONFIGS

    n, trained, repo = model["parameters"], model["trained_parameters"], model.get("standin")
    if repo not in HUB_CONFIGS:
        return n, trained
    small, full = HUB_CONFIGS[repo](False).num_hidden_layers, HUB_CONFIGS[repo](True).num_hidden_layers
    layers = model["layers"] or small
    grow = backbone_parameters(repo, True, round(layers * full / small)) - backbone_parameters(repo, False, layers)
    return n + grow, trained + grow if trained > n / 2 else trained


def flops_per_token(n: int, trained: int) -> int:
    "Training FLOPs a token: 6N when (most of) it trains, 4N when only a little does (LoRA), 2N when frozen (a teacher)."
    return (6 if trained > n / 2 else 4 if trained else 2) * n


def model_sizes(run: dict, grow: bool = True) -> list[tuple[int, int]]:
    """(parameters, trained parameters) of each part of a logged run: its Hugging Face models (with `grow`, stand-ins
    made the hub models: `real_model`), and the rest of it (heads, an LSTM) as one part."""
    models = run.get("models") or []
    rest = (
        run["parameters"] - sum(m["parameters"] for m in models),
        run["trained_parameters"] - sum(m["trained_parameters"] for m in models),
    )
    parts = [real_model(m) if grow else (m["parameters"], m["trained_parameters"]) for m in models]
    return parts + ([rest] if rest[0] else [])


def real_run(run: dict) -> dict:
    "One logged training run at the real scale: its parameters (stand-ins made the hub models), tokens and FLOPs."
    sizes = model_sizes(run)
    out = {k: run.get(k) for k in ("model", "planned_steps", "tokens_per_step")}
    pretrained = run.get("pretrained")  # a hub id; a folder (this machine's) only as the kind of thing it is
    out["pretrained"] = pretrained if not pretrained or not Path(pretrained).is_absolute() else "a local bundle"
    out["parameters"] = sum(n for n, _ in sizes)
    if run["tokens_per_step"] is None or run["planned_steps"] is None:
        return out | {"flops": None}  # not a transformer's batches (skip-gram pairs), or an unbounded run
    tokens = run["tokens_per_step"] * run["planned_steps"]
    return out | {"tokens": tokens, "flops": tokens * sum(flops_per_token(*s) for s in sizes)}


def read_gpu() -> dict | None:
    "results/gpu.json (bench/gpu.sh's figures), or None before a GPU was measured."
    path = ROOT / "results" / "gpu.json"
    return json.loads(path.read_text()) if path.exists() else None


def measured_gpu() -> dict:
    "results/gpu.json's measured seconds a step, by notebook and run order, and the GPU's name (empty without it)."
    gpu = read_gpu()
    if gpu is None:
        return {}
    runs = {nb["notebook"]: nb["runs"] for nb in gpu["dry_run"]["notebooks"] if nb["ok"]}  # whole chapters only
    return {"device": gpu["device"], "runs": runs}


def estimate(tiny: dict, dry: dict) -> dict:
    if dry.get("full_size"):
        sys.exit("a --full-size dry run's models are already the hub's sizes: estimate from a plain dry run")
    chapters = {}
    gpu = measured_gpu()
    for nb in dry["notebooks"]:
        name = nb["notebook"]
        if not nb["ok"]:
            sys.exit(f"{name} failed its dry run: its real path must pass before its time can be estimated")
        runs = [real_run(r) for r in nb["runs"]]
        flops = sum(r["flops"] or 0 for r in runs)
        real = {"runs": runs, "flops": flops}
        real["seconds"] = {g: flops / (peak * UTILISATION) for g, peak in GPUS.items()}
        if gpu and name in gpu["runs"]:
            measured = [r["real_seconds"] for r in gpu["runs"][name] if r.get("real_seconds") is not None]
            real["measured"] = {"device": gpu["device"], "seconds": sum(measured)}
        chapters[name] = {"tiny_seconds": tiny["notebooks"][name], "real": real}
    for name in tiny["notebooks"]:
        if name[:1].isdigit():  # the chapters (not the home page)
            chapters.setdefault(name, {"tiny_seconds": tiny["notebooks"][name], "real": None})
    for name, chapter in chapters.items():
        chapter["switch"] = anchor(json.loads((ROOT / "nbs" / name).read_text())["cells"])[1]
    return {
        "machine": tiny["machine"],
        "gpus": GPUS,
        "utilisation": UTILISATION,
        "chapters": dict(sorted(chapters.items())),
    }


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def sentence(chapter: dict, times: dict, switch: bool) -> str:
    "The chapter's run-time paragraph."
    tiny = f"{MARK} Tiny: {duration(chapter['tiny_seconds'])} here, on {times['machine']} (measured)."
    real = chapter["real"]
    if not switch:
        return f"{MARK} {duration(chapter['tiny_seconds'])} here, on {times['machine']} (measured); one scale only."
    if real is None or not real["flops"]:
        return tiny + (
            " Real: no transformer is trained, so nothing here is estimated from FLOPs; its time goes to downloading "
            "and preparing data, and to work that is not a transformer's training."
        )
    n = len([r for r in real["runs"] if r["flops"]])
    mantissa, exponent = f"{real['flops']:.1e}".split("e")
    gpus = " or ".join(f"{duration(s)} on {g}" for g, s in zip(["a T4", "an A100"], real["seconds"].values()))
    text = (
        f"{tiny} Real: about {gpus} for its training ({n} run{'s' if n > 1 else ''}, {mantissa} × 10^{int(exponent)}^ "
        f"FLOPs at {times['utilisation']:.0%} of the GPU's peak: longer where batches are small), plus downloads, "
        "data preparation and the work done on the CPU."
    )
    if "measured" in real:
        text += f" Measured on an {real['measured']['device']}: {duration(real['measured']['seconds'])} of training."
    return text + " (`tools/run_times.py`)"


def home_tables(times: dict, gpu: dict | None) -> str:
    "The home page's tables: each chapter's run times; what bench/gpu.sh measured (or that nothing was)."
    measured = bool(gpu)
    head = "| chapter | tiny: measured on " + times["machine"] + " | real: T4, estimated | real: A100, estimated |"
    head += f" real: {gpu['device']}, measured |" if measured else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, ch in times["chapters"].items():
        real = ch["real"]
        if real and real["flops"]:
            est = [duration(s) for s in real["seconds"].values()]
        else:  # a chapter of one scale, or one whose real path trains no transformer
            est = ["one scale"] * 2 if not ch.get("switch", True) else ["not estimated"] * 2
        row = f"| [{name.removesuffix('.ipynb')}]({name}) | {duration(ch['tiny_seconds'])} | {est[0]} | {est[1]} |"
        if measured:
            row += f" {duration(real['measured']['seconds'])} |" if real and "measured" in real else " |"
        lines.append(row)
    text = "\n".join(lines) + (
        f"\n\nReal is the chapter's training only: its FLOPs at {times['utilisation']:.0%} of the GPU's peak for the "
        "estimates, which makes them lower bounds where the batches are small (fine-tuning on SNLI: under a thousand "
        "tokens a step, too few to keep a GPU that busy); downloads and data preparation come on top. "
        "`tools/run_times.py` says how each figure is made."
    )
    if not measured:
        return text + (
            "\n\nNo GPU has been measured yet. `bench/gpu.sh`, one prepared run of about ten minutes, measures one: its "
            "matrix-multiply peak, every chapter's real path for a bounded number of steps (model FLOPs utilisation, and "
            "the real runs' time), and int8 / int4 weight-only quantization. It writes `results/gpu.json`, and these "
            "tables are made from that file."
        )
    runs = [
        (nb["notebook"], r)
        for nb in gpu["dry_run"]["notebooks"]
        if nb["ok"]
        for r in nb["runs"]
        if r.get("mfu") is not None
    ]
    text += (
        f"\n\nMeasured by `bench/gpu.sh` on an {gpu['device']} on {gpu['date']} (torch {gpu['torch']}): matrix "
        f"products at {gpu['matmul_tflops']} TFLOP/s (bf16), the peak the utilisation below is a share of.\n\n"
        "| chapter | training run | parameters | tokens a step | ms a step | utilisation |\n|---|---|---|---|---|---|\n"
    )
    text += "\n".join(
        f"| {nb.removesuffix('.ipynb')} | {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['tokens_per_step']:,} | "
        f"{r['seconds_per_step'] * 1000:.0f} | {r['mfu']:.0%} |"
        for nb, r in runs
    )
    text += "\n\n| weights | ms per batch of 32 x 128 | MB |\n|---|---|---|\n"
    text += "\n".join(f"| {q['model']} | {q['ms per batch']} | {q['weights MB']} |" for q in gpu["quantized"])
    if gpu.get("gpt"):  # chapter 3's GPT at GPT-2-small's size, bf16
        text += "\n\n| GPT (124M), block | torch.compile | tokens/s | utilisation |\n|---|---|---|---|\n"
        text += "\n".join(
            f"| {r['block']} | {'yes' if r['compiled'] else 'no'} | "
            + (f"{r['tokens_per_s']:,} | {r['mfu']:.0%} |" if "error" not in r else f"failed: {r['error'][:80]} | |")
            for r in gpu["gpt"]
        )
    return text


def anchor(cells: list) -> tuple[int, bool]:
    "Where the run-time paragraph goes: after the `scale` switch's cell (True), else after the title and badge (False)."
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and re.search(r"^scale\s*=\s*pick_scale\(", "".join(c["source"]), re.M):
            return i, True
    return 1, False


def place(path: Path, text: str | None) -> str | None:
    "The chapter's current paragraph (None unless it has one, in its place); with `text`, write it in instead."
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    at = [i for i, c in enumerate(cells) if MARK in "".join(c["source"])]
    current = "".join(cells[at[0]]["source"]) if len(at) == 1 and at[0] == anchor(cells)[0] + 1 else None
    if text is None:
        return current
    old = [cells.pop(i) for i in reversed(at)]  # every paragraph with the mark goes: one is written back
    i, _ = anchor(cells)
    cell_id = old[-1]["id"] if old else hashlib.sha1(f"run time {path.name}".encode()).hexdigest()[:8]
    cells.insert(i + 1, {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": text.splitlines(True)})
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return text


def home_page_output() -> str | None:
    "The saved output of the home page's cell that shows `home_tables`."
    for c in json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]:
        if c["cell_type"] == "code" and "run_times.home_tables" in "".join(c["source"]):
            outs = [o for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
            return "".join(outs[0]["data"]["text/markdown"]) if outs else None
    return None


def expected(times: dict) -> dict[Path, str]:
    return {ROOT / "nbs" / name: sentence(ch, times, ch["switch"]) for name, ch in times["chapters"].items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", type=Path, help="tools/execute.py --timings output")
    ap.add_argument("--dry-run", type=Path, help="tools/dry_run.py --json output")
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the chapters and the home page state nbs/run_times.json's times",
    )
    args = ap.parse_args()
    if args.check:
        times = json.loads(TIMES.read_text())
        chapters = sorted(p.name for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))
        stale = [f"{p.name}: not measured" for p in map(Path, chapters) if p.name not in times["chapters"]]
        stale += [f"{p.name}: says {place(p, None)!r}" for p, t in expected(times).items() if place(p, None) != t]
        stale += [
            f"{p}: its `scale` switch is {'gone' if was else 'new'}"
            for p, was in ((n, ch["switch"]) for n, ch in times["chapters"].items())
            if anchor(json.loads((ROOT / "nbs" / p).read_text())["cells"])[1] != was
        ]
        if home_page_output() != home_tables(times, read_gpu()):
            stale.append("index.ipynb: its tables' saved output is not what run_times.json and results/gpu.json give")
        if stale:
            sys.exit("run times out of date (see tools/run_times.py):\n" + "\n".join(stale))
        print(f"{len(chapters)} chapters state their run times")
        return 0
    if not (args.tiny and args.dry_run):
        ap.error("give --tiny and --dry-run (or --check)")
    times = estimate(json.loads(args.tiny.read_text()), json.loads(args.dry_run.read_text()))
    TIMES.write_text(json.dumps(times, indent=1) + "\n")
    for path, text in expected(times).items():
        place(path, text)
        print(f"{path.name}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
