"""The `llmstart` command end to end, as a user runs it (a subprocess, the installed console script)."""
import json
import subprocess
import sys
from pathlib import Path

import llmstart
from conftest import llmstart_exe

LLMSTART = llmstart_exe()
ROOT_CONFIGS = Path(llmstart.__file__).parent / "configs"


def run(*args, **kw):
    return subprocess.run([LLMSTART, *args], capture_output=True, text=True, timeout=120, **kw)


def test_help_lists_commands_with_one_line_each():
    r = run("--help")
    assert r.returncode == 0
    assert "usage: llmstart" in r.stdout and "--version" in r.stdout
    lines = [l for l in r.stdout.splitlines() if l.startswith("  data ")]
    assert len(lines) == 1 and "JSON line" in lines[0]


def test_no_command_prints_help():
    r = run()
    assert r.returncode == 0 and "commands:" in r.stdout


def test_version():
    r = run("--version")
    assert (r.returncode, r.stdout.strip()) == (0, f"llmstart {llmstart.__version__}")


def test_unknown_command_suggests():
    r = run("dat", "x")
    assert r.returncode == 2
    assert "unknown command 'dat'; did you mean 'data'?" in r.stderr


def test_help_does_not_import_torch():
    code = "import sys; from llmstart.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('TORCH', 'torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().endswith("TORCH False"), r.stdout[-200:] + r.stderr[-500:]


def test_data_command_summarises_snli(shared):
    r = run("data", str(shared("snli_dev.jsonl")))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rows"] == 9842 and out["kind"] == "classification" and out["skipped"] == 0
    assert out["labels"] == {"entailment": 3329, "neutral": 3235, "contradiction": 3278}
    assert out["text_columns"] == ["premise", "hypothesis"]


def test_data_command_on_corpus_sample():
    r = run("data", "sample:corpus")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["kind"] == "corpus" and out["rows"] == 300


def test_data_command_bad_file_fails_with_the_line(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": }\n{"text": "fine", "label": "neg"}\n')
    r = run("data", str(f))
    assert r.returncode == 1
    assert r.stderr.startswith(f"llmstart data: error: {f}, line 2: broken JSON")
    assert "Traceback" not in r.stderr
    r = run("data", str(f), "--skip_bad", "true")
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert (out["rows"], out["skipped"]) == (2, 1)
    assert out["labels"] == {"neg": 1, "pos": 1}


def test_data_command_help_has_one_line_per_option():
    r = run("data", "--help")
    assert r.returncode == 0
    for opt in ("--kind", "--split", "--text_columns", "--labels", "--skip_bad"):
        assert opt in r.stdout


def test_data_command_missing_file():
    r = run("data", "no/such/file.jsonl")
    assert r.returncode == 1 and "no such file" in r.stderr


def test_an_unreachable_hub_id_fails_about_as_fast_as_a_missing_file(tmp_path):
    "Without the offline flags (the hub probed for real): at most 3 s more than a local mistake, and the way out named."
    import os
    import time
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "https://huggingface.co"
    def timed(*args):
        t0 = time.perf_counter()
        r = subprocess.run([LLMSTART, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        return r, time.perf_counter() - t0
    local, t_local = timed("data", "missing.jsonl")
    hub, t_hub = timed("data", "stanfordnlp/snli")
    assert local.returncode == hub.returncode == 1
    assert "no such file" in local.stderr
    assert "Use a local file instead" in hub.stderr and len(hub.stderr.strip().splitlines()) == 1, hub.stderr
    assert t_hub - t_local <= 3, (t_hub, t_local)


def test_every_command_has_one_mechanism(capsys):
    "In process (one import for all): each command's --help lists --config and --print_config, each option once."
    import re
    import pytest
    from llmstart.cli import discover_commands, main
    for name in discover_commands():
        with pytest.raises(SystemExit) as e: main([name, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0, name
        assert "--config" in out and "--print_config" in out, name
        listed = re.findall(r"^  (--[\w.]+)", out, re.M)
        assert len(listed) == len(set(listed)) and len(listed) >= 3, (name, listed)


def test_mistakes_get_one_line_naming_the_nearest_valid_option(tmp_path, capsys):
    from llmstart.cli import main
    recipe = tmp_path / "typo.yaml"
    recipe.write_text((ROOT_CONFIGS / "tiny-mlm.yaml").read_text().replace("hidden_size", "hiden_size"))
    cases = [(["pretrain", "--config", str(recipe)], "unknown key 'hiden_size' for MaskedLM; did you mean 'hidden_size'?"),
             (["compress", "--modl", "x"], "unknown option --modl; did you mean 'model'?"),
             (["finetune", "--model.backbon", "x"], "unknown option --model.backbon; did you mean 'model.backbone'?"),
             (["pretrain", "--config", "tiny-mlm", "--trainer.max_step", "3"], "did you mean 'trainer.max_steps'?"),
             (["evaluate", "--model", "m"], "missing --data")]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, (argv, err)


def test_dashes_and_underscores_both_work_and_config_files_too(tmp_path, capsys):
    import yaml
    from llmstart.core import parse_command
    from llmstart.optimization import compress
    a = parse_command(compress, ["--model", "m", "--method", "int8", "--eval-data", "e", "--output", "o", "--latency-examples", "8"],
                      "llmstart compress", "", skip=["report"])
    b = parse_command(compress, ["--model", "m", "--method", "int8", "--eval_data", "e", "--output", "o", "--latency_examples", "8"],
                      "llmstart compress", "", skip=["report"])
    assert a == b and a["eval_data"] == "e" and a["latency_examples"] == 8
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "m", "method": "int8", "eval_data": "e", "output": "o"}))
    assert parse_command(compress, ["--config", str(cfg)], "llmstart compress", "", skip=["report"])["eval_data"] == "e"
