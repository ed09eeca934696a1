"""The `llmstart` command end to end: the console script in a process of its own where the process matters (help, imports,
timing), in this process (`conftest.cli`) for what a command does."""

import json
import subprocess
import sys
from pathlib import Path

import llmstart
from conftest import cli, llmstart_exe

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


HEAVY = ("torch", "lightning", "transformers", "datasets", "tokenizers", "onnxruntime", "litserve")


def heavy_imports(*argv) -> list[str]:
    "The heavy libraries imported by `llmstart *argv` (in a fresh process)."
    code = (
        f"import sys; from llmstart.cli import main\ntry: main({list(argv)!r})\nexcept SystemExit: pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY" in r.stdout, r.stdout[-200:] + r.stderr[-1000:]
    return eval(r.stdout.rsplit("HEAVY", 1)[1])


def test_help_does_not_import_torch():
    assert heavy_imports("--help") == []


def test_command_help_is_read_from_the_source_without_heavy_imports():
    "Every function command answers --help without importing a heavy library; the training commands (a LightningCLI)"
    " take their options from the model classes, so they import them."
    from llmstart.cli import discover_commands, source_function

    commands = discover_commands()
    rebuilt = {name for name, cmd in commands.items() if source_function(cmd)}
    assert rebuilt == set(commands) - {"pretrain", "finetune", "sft", "dpo"}, rebuilt
    for name in ("data", "compress", "pipeline"):
        assert heavy_imports(name, "--help") == [], name
    assert "lightning" in heavy_imports("finetune", "--help")


def test_help_from_the_source_is_the_imported_help(capsys):
    "Word for word: the function rebuilt from the source gives the help the imported function gives."
    import importlib
    import pytest
    from llmstart.cli import discover_commands, source_function
    from llmstart.core import parse_command

    for name, cmd in discover_commands().items():
        if not (found := source_function(cmd)):
            continue
        fn, args, kwargs = found
        texts = []
        for f in (fn, getattr(importlib.import_module(cmd.module), fn.__name__)):
            with pytest.raises(SystemExit):
                parse_command(f, ["--help"], *args, **kwargs)
            texts.append(capsys.readouterr().out)
        assert texts[0] == texts[1] and "--config" in texts[0], name


def test_data_command_summarises_snli(shared):
    r = cli("data", shared("snli_dev.jsonl"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rows"] == 9842 and out["kind"] == "classification" and out["skipped"] == 0
    assert out["labels"] == {"entailment": 3329, "neutral": 3235, "contradiction": 3278}
    assert out["text_columns"] == ["premise", "hypothesis"]


def test_data_command_on_corpus_sample():
    r = cli("data", "sample:corpus")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["kind"] == "corpus" and out["rows"] == 300


def test_data_command_bad_file_fails_with_the_line(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": }\n{"text": "fine", "label": "neg"}\n')
    r = cli("data", f)
    assert r.returncode == 1
    assert r.stderr.startswith(f"llmstart data: error: {f}, line 2: broken JSON")
    assert "Traceback" not in r.stderr
    r = cli("data", f, "--skip_bad", "true")
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
    r = cli("data", "no/such/file.jsonl")
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
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0, name
        assert "--config" in out and "--print_config" in out, name
        listed = re.findall(r"^  (--[\w.]+)", out, re.M)
        assert len(listed) == len(set(listed)) and len(listed) >= 3, (name, listed)


def test_mistakes_get_one_line_naming_the_nearest_valid_option(tmp_path, capsys):
    from llmstart.cli import main

    recipe = tmp_path / "typo.yaml"
    recipe.write_text((ROOT_CONFIGS / "tiny-mlm.yaml").read_text().replace("hidden_size", "hiden_size"))
    cases = [
        (["pretrain", "--config", str(recipe)], "unknown key 'hiden_size' for MaskedLM; did you mean 'hidden_size'?"),
        (["compress", "--modl", "x"], "unknown option --modl; did you mean 'model'?"),
        (["finetune", "--model.backbon", "x"], "unknown option --model.backbon; did you mean 'model.backbone'?"),
        (["pretrain", "--config", "tiny-mlm", "--trainer.max_step", "3"], "did you mean 'trainer.max_steps'?"),
        (["evaluate", "--model", "m"], "missing --data"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, (argv, err)


def test_dashes_and_underscores_both_work_and_config_files_too(tmp_path, capsys):
    import yaml
    from llmstart.core import parse_command
    from llmstart.optimization import compress

    a = parse_command(
        compress,
        ["--model", "m", "--method", "int8", "--eval-data", "e", "--output", "o", "--latency-examples", "8"],
        "llmstart compress",
        "",
        skip=["report"],
    )
    b = parse_command(
        compress,
        ["--model", "m", "--method", "int8", "--eval_data", "e", "--output", "o", "--latency_examples", "8"],
        "llmstart compress",
        "",
        skip=["report"],
    )
    assert a == b and a["eval_data"] == "e" and a["latency_examples"] == 8
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "m", "method": "int8", "eval_data": "e", "output": "o"}))
    assert parse_command(compress, ["--config", str(cfg)], "llmstart compress", "", skip=["report"])["eval_data"] == "e"


def test_every_command_that_reads_labelled_data_reads_it_the_same_way(tmp_path):
    """A spreadsheet's CSV with columns of its own (byte-order mark, Windows line endings): fine-tuned with
    --data.text_columns / --data.label_column, then evaluated, compressed and exported on it without being told again;
    `data`, `evaluate`, `compress` and `export` all take --text_columns, --label_column and --skip_bad."""
    import csv
    import io
    from llmstart.data import load_classification, minilm_path

    rows = load_classification("sample:nli-val")
    names = rows.features["label"].names
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["first", "second", "verdict"])
    for r in rows.select(range(120)):
        writer.writerow([r["premise"], r["hypothesis"], names[r["label"]]])
    data = tmp_path / "mine.csv"
    data.write_text("\ufeff" + buf.getvalue(), encoding="utf-8", newline="")

    def ok(*args):
        r = cli(*args)
        assert r.returncode == 0, f"llmstart {' '.join(map(str, args))}\n{r.stderr[-3000:]}"
        return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    ok(
        "finetune",
        "--model.backbone",
        minilm_path(),
        "--data.train_file",
        data,
        "--data.text_columns",
        "[first, second]",
        "--data.label_column",
        "verdict",
        "--trainer.max_steps",
        3,
        "--trainer.progress_bar",
        "false",
        "--output",
        tmp_path / "clf",
    )
    info = json.loads((tmp_path / "clf" / "llmstart.json").read_text())
    assert info["text_columns"] == ["first", "second"] and info["label_column"] == "verdict"
    evaluated = ok("evaluate", "--model", tmp_path / "clf", "--data", data)[-1]
    assert evaluated["n"] == 120
    compressed = ok(
        "compress",
        "--model",
        tmp_path / "clf",
        "--method",
        "int8",
        "--eval_data",
        data,
        "--output",
        tmp_path / "int8",
        "--latency_examples",
        16,
    )
    assert [r["n"] for r in compressed] == [120, 120] and compressed[0]["accuracy"] == evaluated["accuracy"]
    exported = ok("export", "--model", tmp_path / "clf", "--output", tmp_path / "onnx", "--parity_data", data)[-1]
    assert exported["parity_examples"] == 64 and exported["parity_max_abs_diff"] <= 1e-4
    summary = ok("data", data, "--text_columns", "[first, second]", "--label_column", "verdict")[-1]
    assert summary["rows"] == 120 and summary["text_columns"] == ["first", "second"]
    # told other columns, every command says which columns the file has
    for command in (
        ["evaluate", "--model", tmp_path / "clf", "--data", data],
        ["compress", "--model", tmp_path / "clf", "--method", "int8", "--eval_data", data, "--output", tmp_path / "x"],
        ["export", "--model", tmp_path / "clf", "--output", tmp_path / "y", "--parity_data", data],
    ):
        r = cli(*command, "--text_columns", "[premise, hypothesis]")
        assert r.returncode == 1 and "first" in r.stderr and "premise" in r.stderr, (command[0], r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # stopped before writing anything
    # the pipeline reads its files with the same options: a bad label in the test file is found (columns understood)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(data.read_bytes().replace(b",entailment\r\n", b",maybe\r\n", 1))
    r = cli(
        "pipeline",
        "--output",
        tmp_path / "run",
        "--train_data",
        data,
        "--test_data",
        bad,
        "--text_columns",
        "[first, second]",
        "--label_column",
        "verdict",
    )
    assert r.returncode == 1 and "unknown label 'maybe'" in r.stderr, r.stderr[-2000:]
    for command in ("data", "evaluate", "compress", "export", "pipeline"):
        help_text = cli(command, "--help").stdout
        assert all(f"--{o}" in help_text for o in ("text_columns", "label_column", "skip_bad")), command
