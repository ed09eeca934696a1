#!/usr/bin/env python
"""The real-scale path of every chapter, run here: on this CPU, offline, in minutes. A chapter's real path must pass it.

    python tools/dry_run.py [nbs/04_pretraining.ipynb ...] [--steps 2] [--workers N] [--json FILE] [--full-size]

Each notebook runs top to bottom, unchanged, at `LLMSTART_SCALE=real`, cells flagged `#| gpu` included, with:

- the hub's models and data sets replaced by **stand-ins**: tiny models of the same architectures (with `--full-size`,
  of the same sizes: what bench/gpu.sh runs on a GPU) and data sets with the same configs, splits and columns (SNLI's
  training split as many rows as the hub's), written into a temporary Hugging Face cache in the hub's layout, which the
  libraries read in offline mode as they would read downloaded ones (`HUB_MODELS`, `HUB_DATASETS`);
- every training run cut to `--steps` optimizer steps in one epoch (`LLMSTART_DRY_RUN`, which the recipe's
  `make_trainer` reads; validation stays whole, as the stand-ins are small);
- no shared data folder: the shared files come from the download cache, as on Colab after the first download (the
  download itself is tested in tests/test_data.py against a stand-in server);
- two mistakes that run but are wrong turned into failures: a model with positions its data never reaches
  (`ContextWarning`), and a chapter that falls back to a bundled sample at the real scale.

Prints one line per notebook (seconds, and the error if it failed), and exits non-zero if any failed. `--json` also
keeps every training run's line of the run log (`llmstart.training.RunLog`: parameters, tokens a step, the steps the
real run takes, seconds a step here), from which tools/run_times.py estimates each chapter's real-scale run time.
"""

import argparse, hashlib, json, os, re, shutil, subprocess, sys, tempfile, threading, time, traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FALLBACK = "no copy downloaded"  # what `shared_file` prints when a chapter is left with the bundled samples


# --- stand-ins for the hub ---------------------------------------------------------------------------------------


def bert_config(full: bool = False):
    "bert-base-uncased's architecture (`BertConfig`'s defaults) with `full`, else a 2-layer, 32-wide BERT of its vocabulary."
    from transformers import BertConfig

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = BertConfig(vocab_size=30522, **({} if full else small))
    config.llmstart_standin = "google-bert/bert-base-uncased"  # kept by every model derived from it (the run log's)
    return config


def gpt2_config(full: bool = False):
    "GPT-2 small's architecture (`GPT2Config`'s defaults) with `full`, else a 2-layer, 32-wide GPT-2 of its vocabulary."
    from transformers import GPT2Config

    small = dict(n_embd=32, n_layer=2, n_head=2)
    config = GPT2Config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, **({} if full else small))
    config.llmstart_standin = "openai-community/gpt2"
    return config


def _bert(folder: Path, full: bool = False):
    "bert-base-uncased's tokenizer (all-MiniLM-L6-v2 ships the same vocabulary) on `bert_config(full)`."
    from transformers import AutoTokenizer, BertForPreTraining
    from llmstart.data import minilm_path

    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    BertForPreTraining(bert_config(full)).save_pretrained(folder)


def _gpt2(folder: Path, full: bool = False):
    """A byte-level BPE tokenizer of GPT-2's size (50,257 entries: a thousand learnt on the bundled corpus, the rest
    never produced) with GPT-2's one special token, id 50256, and no padding token; on `gpt2_config(full)`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast
    from llmstart.data import sample_path

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(sample_path("corpus"))], vocab_size=1000)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab |= {f"<|unused{i}|>": i for i in range(len(vocab), 50256)} | {"<|endoftext|>": 50256}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tok = GPT2TokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=1024)
    assert len(tok) == 50257 and tok.eos_token_id == 50256, (len(tok), tok.eos_token_id)
    tok.save_pretrained(folder)
    GPT2LMHeadModel(gpt2_config(full)).save_pretrained(folder)


def smollm2_config(full: bool = False):
    "SmolLM2-135M's architecture (a Llama) with `full`, else a 2-layer, 64-wide Llama of its vocabulary."
    from transformers import LlamaConfig

    real = dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
    )
    small = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    config = LlamaConfig(
        vocab_size=49152,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        **(real if full else small),
    )
    config.llmstart_standin = "HuggingFaceTB/SmolLM2-135M"
    return config


CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _smollm2(folder: Path, full: bool = False):
    """A byte-level BPE tokenizer of SmolLM2's size (49,152 entries: a thousand learnt on the bundled corpus, the rest
    never produced) with its special tokens at its ids (<|endoftext|> 0, <|im_start|> 1, <|im_end|> 2) and its ChatML
    chat template; on `smollm2_config(full)`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast, LlamaForCausalLM
    from llmstart.data import sample_path

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(sample_path("corpus"))], vocab_size=1000, special_tokens=specials)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab |= {f"<|unused{i}|>": i for i in range(len(vocab), 49152)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tok = GPT2TokenizerFast(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=8192,
        bos_token=specials[0],
        eos_token=specials[0],
        unk_token=specials[0],
        additional_special_tokens=specials[1:],
    )
    tok.chat_template = CHATML
    assert len(tok) == 49152 and tok.convert_tokens_to_ids(specials) == [0, 1, 2], (
        len(tok),
        tok.convert_tokens_to_ids(specials),
    )
    tok.save_pretrained(folder)
    LlamaForCausalLM(smollm2_config(full)).save_pretrained(folder)


HUB_MODELS = {
    "google-bert/bert-base-uncased": _bert,
    "openai-community/gpt2": _gpt2,
    "HuggingFaceTB/SmolLM2-135M": _smollm2,
}
HUB_CONFIGS = {
    "google-bert/bert-base-uncased": bert_config,
    "openai-community/gpt2": gpt2_config,
    "HuggingFaceTB/SmolLM2-135M": smollm2_config,
}


def _snli(rows: list[dict]):
    "SNLI's splits, columns and labels (ClassLabel; -1 where the annotators did not agree), from real SNLI dev pairs."
    import datasets

    names = ["entailment", "neutral", "contradiction"]
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
        }
    )

    def part(rs):
        rs = [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names.index(r["label"])} for r in rs]
        for r in rs[3::700]:  # the hub's unlabelled pairs, about as often
            r["label"] = -1
        return datasets.Dataset.from_list(rs, features=features)

    # the training split has the hub's 550,152 rows (the dev pairs over and over), so that an epoch of it is as many
    # steps as on the hub: the run log's planned steps are the real run's; validation and test stay small
    return "plain_text", {
        "train": part([rows[i % len(rows)] for i in range(550_152)]),
        "validation": part(rows[2000:2400]),
        "test": part(rows[2400:2800]),
    }


def _wikitext(lines: list[str]):
    "WikiText-103 (raw)'s splits and one `text` column: a line a row, blank lines and ' = Heading = ' lines included."
    import datasets

    part = lambda ls: datasets.Dataset.from_dict({"text": [l + "\n" if l.strip() else "" for l in ls]})
    return "wikitext-103-raw-v1", {
        "train": part(lines[:3000]),
        "validation": part(lines[3000:3400]),
        "test": part(lines[3400:3760]),
    }


_MESSAGES = [{"content": "", "role": ""}]


def _smoltalk(lines: list[str]):
    """smol-smoltalk's splits and columns (`messages`, `source`): chats from chapter 6's instruction set and from
    WikiText sentences (continue this text), in OpenAI's format."""
    import datasets
    from llmstart.alignment import make_instructions

    text = [l.strip() for l in lines if len(l.strip()) > 80]

    def part(rows, start):
        out = [{"messages": r["messages"], "source": "llmstart-" + r["task"]} for r in rows]
        for i, t in enumerate(text[start : start + len(rows) // 2]):
            half = len(t) // 2
            out.append(
                {
                    "messages": [
                        {"role": "user", "content": "Continue: " + t[:half]},
                        {"role": "assistant", "content": t[half:]},
                    ],
                    "source": "wikitext",
                }
            )
        return datasets.Dataset.from_list(out)

    return "default", {
        "train": part(make_instructions(2000, "train"), 0),
        "test": part(make_instructions(100, "test"), 3000),
    }


def _ultrafeedback(lines: list[str]):
    """UltraFeedback (binarized)'s preference splits and columns: `prompt`, and `chosen` / `rejected` as whole
    conversations (message lists), with scores; pairs from chapter 6's instruction set."""
    import datasets
    from llmstart.alignment import make_instructions

    def part(rows):
        out = []
        for i, r in enumerate(rows):
            user = {"role": "user", "content": r["prompt"]}
            out.append(
                {
                    "prompt": r["prompt"],
                    "prompt_id": str(i),
                    "score_chosen": 9.0,
                    "score_rejected": 3.0,
                    "chosen": [user, {"role": "assistant", "content": r["chosen"]}],
                    "rejected": [user, {"role": "assistant", "content": r["rejected"]}],
                }
            )
        return datasets.Dataset.from_list(out)

    train, test = make_instructions(1000, "train", preferences=True), make_instructions(100, "test", preferences=True)
    return "default", {"train_prefs": part(train), "test_prefs": part(test)}


HUB_DATASETS = {
    "stanfordnlp/snli": _snli,
    "Salesforce/wikitext": _wikitext,
    "HuggingFaceTB/smol-smoltalk": _smoltalk,
    "HuggingFaceH4/ultrafeedback_binarized": _ultrafeedback,
}


def put_model(hub_cache: Path, repo_id: str, build):
    "Write a stand-in model into the hub cache's layout: models--org--name/{refs/main, snapshots/<revision>/...}."
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(f"dry-run {repo_id}".encode()).hexdigest()
    build(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


def put_dataset(datasets_cache: Path, repo_id: str, config: str, splits: dict):
    "Write a stand-in data set where `datasets` keeps a prepared one (offline, `load_dataset(repo_id)` reads it there)."
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from datasets.naming import camelcase_to_snakecase

    namespace, name = repo_id.split("/")
    folder = datasets_cache / f"{namespace}___{camelcase_to_snakecase(name)}" / config / "0.0.0" / "dryrun"
    folder.mkdir(parents=True)
    info = datasets.SplitDict(dataset_name=name)
    for split, ds in splits.items():
        writer = ArrowWriter(features=ds.features, path=str(folder / f"{name}-{split}.arrow"))
        writer.write_table(ds.data.table)
        n, size = writer.finalize()
        writer.close()
        info.add(datasets.SplitInfo(name=split, num_bytes=size, num_examples=n, dataset_name=name))
    features = next(iter(splits.values())).features
    datasets.DatasetInfo(
        features=features, config_name=config, dataset_name=name, builder_name=name, splits=info, version="0.0.0"
    ).write_to_directory(str(folder))


def build_standins(home: Path, full: bool = False) -> dict | None:
    """Stand-ins for every hub model (at the real architecture's size with `full`) and data set the chapters name, and
    a download cache holding the shared files, under `home`; returns the environment that points the libraries at
    them (None when the shared data files are neither here nor downloadable)."""
    from llmstart.data import SHARED_DATA, _sha256, shared_file

    if any(shared_file(n) is None for n in SHARED_DATA):  # the shared folder's, cached, or downloaded now
        return None
    for repo_id, build in HUB_MODELS.items():
        put_model(home / "hf" / "hub", repo_id, lambda folder: build(folder, full))
    snli = [json.loads(l) for l in shared_file("snli_dev.jsonl").read_text().splitlines()]
    wiki = shared_file("wikitext2_valid.txt").read_text(encoding="utf-8").splitlines()
    for repo_id, rows in [
        ("stanfordnlp/snli", snli),
        ("Salesforce/wikitext", wiki),
        ("HuggingFaceTB/smol-smoltalk", wiki),
        ("HuggingFaceH4/ultrafeedback_binarized", wiki),
    ]:
        put_dataset(home / "hf" / "datasets", repo_id, *HUB_DATASETS[repo_id](rows))
    cache = home / "cache" / "data"
    cache.mkdir(parents=True)
    for name, spec in SHARED_DATA.items():
        data = shared_file(name).read_bytes()
        assert _sha256(data) == spec.sha256, f"{name}: the shared copy is not the pinned file"
        (cache / name).write_bytes(data)
    (home / "no-shared-data").mkdir()
    return {
        "HF_HOME": str(home / "hf"),
        "HF_HUB_CACHE": str(home / "hf" / "hub"),
        "HF_DATASETS_CACHE": str(home / "hf" / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "LLMSTART_CACHE": str(home / "cache"),
        "LLMSTART_DATA_DIR": str(home / "no-shared-data"),
    }


# --- running the notebooks ---------------------------------------------------------------------------------------

PRELUDE = """import warnings
from llmstart.pretraining import ContextWarning
warnings.simplefilter("error", ContextWarning)"""


def run_one(path: Path):
    "Run one notebook in this process (the child side of `main`); raise on the first failing cell."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell

    os.chdir(path.parent)
    nb, shell = read_nb(path), CaptureShell(path)
    for cell in nb.cells:  # only this run's outputs are checked (execnb keeps a cell's saved ones when it prints none)
        cell.outputs = []
    shell.run(PRELUDE)
    seconds = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or re.search(r"^#\|\s*eval:\s*false\s*$", cell.source, re.M):
            continue
        start = time.perf_counter()
        shell.cell(cell)
        seconds[i] = round(time.perf_counter() - start, 1)
        if shell.exc:
            error = "".join(traceback.format_exception(shell.exc)[-4:])
            sys.exit(f"{path.name}, cell {i} failed:\n{cell.source[:800]}\n---\n{error}")
    printed = json.dumps([c.get("outputs", []) for c in nb.cells])
    if FALLBACK in printed:
        sys.exit(f"{path.name}: at the real scale it fell back to a bundled sample ('{FALLBACK}' in its output)")
    slowest = sorted(seconds.items(), key=lambda kv: -kv[1])[:3]
    print(json.dumps({"slowest_cells": [{"cell": i, "seconds": t} for i, t in slowest]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every chapter in nbs/)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps every training run is cut to")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="notebooks run at once")
    ap.add_argument(
        "--json", type=Path, help="also write the per-notebook results (and their training runs) to this file"
    )
    ap.add_argument("--full-size", action="store_true", help="hub stand-ins of the real architectures' sizes (a GPU's)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return run_one(args.child.resolve())
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
    home = Path(tempfile.mkdtemp(prefix="llmstart-dry-run-"))
    try:
        t0 = time.perf_counter()
        standins = build_standins(home, args.full_size)
        if standins is None:
            print(
                "dry run skipped: it builds its stand-ins from the shared data files (SNLI dev, WikiText-2, Tiny "
                "Shakespeare), and they are neither in a shared data folder (shared/data above the repository, or "
                "$LLMSTART_DATA_DIR) nor downloadable now (offline)"
            )
            return 0
        env = os.environ | standins
        threads = str(max(1, (os.cpu_count() or 1) // max(1, min(args.workers, len(paths)))))
        env |= {"LLMSTART_SCALE": "real", "LLMSTART_DRY_RUN": str(args.steps), "OMP_NUM_THREADS": threads}
        env |= {"TMPDIR": str(home), "MPLBACKEND": "agg", "TOKENIZERS_PARALLELISM": "false"}
        print(f"stand-ins built in {time.perf_counter() - t0:.0f} s under {home}", flush=True)

        def run(path):
            start = time.perf_counter()
            cmd = [sys.executable, __file__, "--child", str(path)]
            log = home / f"runs-{path.stem}.jsonl"  # every training run's line (llmstart.training.RunLog)
            proc = subprocess.run(
                cmd,
                env=env | {"LLMSTART_RUN_LOG": str(log), "LLMSTART_NOTEBOOK": path.name},
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
            error = None if proc.returncode == 0 else (proc.stderr.strip() or proc.stdout.strip())[-3000:]
            last = (proc.stdout.strip().splitlines() or [""])[-1]
            slowest = json.loads(last)["slowest_cells"] if error is None and last.startswith('{"slowest_cells"') else []
            where = ", ".join(f"cell {c['cell']} {c['seconds']:.0f} s" for c in slowest)
            print(
                f"{'ok  ' if error is None else 'FAIL'} {path.name}: {seconds:.0f} s"
                + (f" (slowest: {where})" if where else ""),
                flush=True,
            )
            if error:
                print("     " + error.replace("\n", "\n     "), flush=True)
            return {
                "notebook": path.name,
                "seconds": round(seconds, 1),
                "ok": error is None,
                "error": error,
                "slowest_cells": slowest,
                "runs": [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else [],
            }

        results, lock = [], threading.Lock()

        def write_json():  # after every notebook, so that a run stopped early keeps the notebooks it finished
            if args.json:
                report = {
                    "steps": args.steps,
                    "full_size": args.full_size,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                args.json.write_text(json.dumps(report | {"notebooks": results}, indent=1))

        def run_and_keep(path):
            result = run(path)
            with lock:
                results.append(result)
                write_json()

        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(run_and_keep, paths))
        results.sort(key=lambda r: r["notebook"])
        write_json()
        failed = [r["notebook"] for r in results if not r["ok"]]
        total = time.perf_counter() - t0
        print(f"dry run: {len(results) - len(failed)} of {len(results)} notebooks passed in {total:.0f} s")
        return 1 if failed else 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
