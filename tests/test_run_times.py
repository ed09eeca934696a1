"""Run times on the page: every chapter states nbs/run_times.json's figures, the real-scale estimate is the FLOPs of the
runs the dry run logged (a stand-in counted as the hub model it stands for), and the home page's GPU table is made
from results/gpu.json, or says that no GPU was measured."""

import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import run_times  # noqa: E402


def test_every_chapter_states_its_run_times():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_times.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr + r.stdout


def _run(**kw):
    run = dict(model="SequenceClassifier", pretrained=None, parameters=1_000_000, trained_parameters=1_000_000)
    return run | dict(tokens_per_step=32 * 40, planned_steps=17_168, steps=2, seconds_per_step=0.1, models=[]) | kw


BERT = "google-bert/bert-base-uncased"


def test_a_stand_in_is_counted_as_the_hub_model_it_stands_for():
    standin = run_times.backbone_parameters(BERT, full=False)
    real = run_times.backbone_parameters(BERT, full=True)
    assert real == 109_482_240  # bert-base-uncased: embeddings, 12 layers of 768, pooler
    clf = standin + 32 * 3 + 3  # with its classification head
    model = dict(standin=BERT, layers=2, parameters=clf, trained_parameters=clf)
    run = run_times.real_run(_run(parameters=clf, trained_parameters=clf, models=[model]))
    assert run["parameters"] == real + 32 * 3 + 3  # the stand-in's head stays its own size: a few hundred off
    assert run["flops"] == 6 * run["parameters"] * 32 * 40 * 17_168  # 6N a token, every token of every planned step


def test_a_distilled_student_with_half_the_layers_and_its_frozen_teacher():
    one = run_times.backbone_parameters(BERT, full=False, layers=1)
    two = run_times.backbone_parameters(BERT, full=False)
    teacher = dict(standin=BERT, layers=2, parameters=two, trained_parameters=0)
    student = dict(standin=BERT, layers=1, parameters=one, trained_parameters=one)
    run = run_times.real_run(_run(parameters=one + two, trained_parameters=one, models=[teacher, student]))
    six = run_times.backbone_parameters(BERT, full=True, layers=6)
    assert run["parameters"] == 109_482_240 + six
    assert run["flops"] == (2 * 109_482_240 + 6 * six) * 32 * 40 * 17_168  # the teacher only runs forward


def test_lora_costs_4n_a_token_and_unknown_batches_no_flops():
    lora = run_times.real_run(_run(trained_parameters=2_000))  # under half trained: no weight gradients for the rest
    assert lora["flops"] == 4 * 1_000_000 * 32 * 40 * 17_168
    assert run_times.real_run(_run(tokens_per_step=None))["flops"] is None  # skip-gram pairs: not a transformer's


@pytest.mark.parametrize(
    "seconds, text", [(0.4, "1 s"), (42, "42 s"), (89.6, "90 s"), (95, "2 min"), (3000, "50 min"), (7200, "2.0 h")]
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert run_times.duration(seconds) == text


TIMES = {
    "machine": "2 CPU cores",
    "utilisation": 0.3,
    "chapters": {
        "05_finetuning.ipynb": {
            "tiny_seconds": 110.0,
            "real": {"runs": [], "flops": 3.9e16, "seconds": {"T4": 2000.0, "A100": 416.7}},
            "switch": True,
        },
        "01_embeddings.ipynb": {"tiny_seconds": 26.0, "real": {"runs": [], "flops": 0, "seconds": {}}, "switch": True},
        "11_core.ipynb": {"tiny_seconds": 9.0, "real": None, "switch": False},
    },
}


def test_the_home_page_says_no_gpu_was_measured_until_one_was():
    text = run_times.home_tables(TIMES, None)
    assert "| [05_finetuning](05_finetuning.ipynb) | 2 min | 33 min | 7 min |" in text
    assert "| [01_embeddings](01_embeddings.ipynb) | 26 s | not estimated | not estimated |" in text  # no transformer
    assert "| [11_core](11_core.ipynb) | 9 s | one scale | one scale |" in text
    assert "No GPU has been measured yet" in text


def test_the_home_page_gpu_table_is_made_from_results_gpu_json():
    run = _run(parameters=109_484_547, mfu=0.412, seconds_per_step=0.0311)
    gpu = {
        "device": "NVIDIA H200",
        "date": "2026-12-04",
        "torch": "2.11.0",
        "matmul_tflops": 790.1,
        "quantized": [{"model": "int4 weight-only", "ms per batch": 1.2, "weights MB": 80.5}],
        "dry_run": {"notebooks": [{"notebook": "05_finetuning.ipynb", "ok": True, "runs": [run]}]},
    }
    times = {**TIMES, "chapters": {**TIMES["chapters"]}}
    times["chapters"]["05_finetuning.ipynb"] = {
        "tiny_seconds": 110.0,
        "switch": True,
        "real": {**TIMES["chapters"]["05_finetuning.ipynb"]["real"], "measured": {"seconds": 534.0}},
    }
    text = run_times.home_tables(times, gpu)
    assert "No GPU has been measured yet" not in text
    assert "| [05_finetuning](05_finetuning.ipynb) | 2 min | 33 min | 7 min | 9 min |" in text
    assert "790.1 TFLOP/s" in text and "| 05_finetuning | SequenceClassifier | 109.5M | 1,280 | 31 | 41% |" in text
    assert "| int4 weight-only | 1.2 | 80.5 |" in text


def test_bench_gpu_counts_flops_as_the_estimates_do():
    "bench/gpu.py's utilisation and measured real time, from a run log, in the keys the home page's table reads."
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu

    teacher = dict(standin=BERT, layers=12, parameters=100, trained_parameters=0)
    student = dict(standin=BERT, layers=6, parameters=50, trained_parameters=50)
    run = _run(parameters=150, trained_parameters=50, models=[teacher, student], tokens_per_step=1000)
    run |= dict(seconds_per_step=0.5, planned_steps=400)
    dry = {"notebooks": [{"notebook": "07_optimization.ipynb", "ok": True, "runs": [run]}]}
    out = gpu.summarise(dry, peak=1e6)["notebooks"][0]["runs"][0]
    assert out["mfu"] == round((2 * 100 + 6 * 50) * 1000 / 0.5 / 1e6, 4)  # a frozen teacher: forward only
    assert out["real_seconds"] == 200.0
    table = run_times.home_tables(
        TIMES, {"device": "GPU", "date": "d", "torch": "t", "matmul_tflops": 1.0, "quantized": [], "dry_run": dry}
    )
    assert "| 07_optimization | SequenceClassifier | 0.0M | 1,000 | 500 | 100% |" in table


def test_the_readme_keeps_only_the_output_of_echo_false_cells():
    import readme

    assert readme.directives("#| echo: false\nx = 1")[0] == {"no-echo"}
    assert readme.directives("#| echo: true\n#| default_exp data\nx")[0] == {"echo", "default_exp"}
