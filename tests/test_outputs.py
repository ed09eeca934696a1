"""No command loses or mixes a user's files, and a run resumes only itself: every writing command pointed at a folder that
holds a user's file, the same command run twice, and a different run in the folder of an earlier one."""

import json

import pytest

from conftest import cli

MINE = "notes.txt"


def run(*args, cwd=None):
    return cli(*args, cwd=cwd)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.returncode == 0, f"llmstart {' '.join(map(str, args))}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    "A tiny masked-LM bundle and an NLI classifier fine-tuned from it, each from its command (shared by the tests here)."
    root = tmp_path_factory.mktemp("bundles")
    ok(
        "pretrain",
        "--config",
        "tiny-mlm",
        "--trainer.max_steps",
        20,
        "--trainer.output_dir",
        root / "pt",
        "--trainer.progress_bar",
        "false",
    )
    ok(
        "finetune",
        "--model.backbone",
        root / "pt" / "bundle",
        "--data.train_file",
        "sample:nli-val",
        "--trainer.max_steps",
        10,
        "--trainer.progress_bar",
        "false",
        "--output",
        root / "clf",
    )
    return root / "pt" / "bundle", root / "clf"


def users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / MINE).write_text("my work")
    return folder


def writing_commands(bundles, out):
    mlm, clf = bundles
    return {
        "tokenizer": ["tokenizer", "sample:corpus", out, "--kind", "wordpiece", "--vocab_size", 500],
        "pretrain": [
            "pretrain",
            "--config",
            "tiny-mlm",
            "--trainer.max_steps",
            2,
            "--trainer.output_dir",
            out,
            "--trainer.progress_bar",
            "false",
        ],
        "finetune": [
            "finetune",
            "--model.backbone",
            mlm,
            "--data.train_file",
            "sample:nli-val",
            "--trainer.max_steps",
            2,
            "--trainer.progress_bar",
            "false",
            "--output",
            out,
        ],
        "compress": [
            "compress",
            "--model",
            clf,
            "--method",
            "int8",
            "--eval-data",
            "sample:nli-val",
            "--output",
            out,
            "--latency-examples",
            32,
        ],
        "export": ["export", "--model", clf, "--output", out],
        "pipeline": ["pipeline", "--output", out],
    }


@pytest.mark.parametrize("command", ["tokenizer", "pretrain", "finetune", "compress", "export", "pipeline"])
def test_a_folder_of_the_users_is_refused_and_left_alone(bundles, tmp_path, command):
    folder = users_folder(tmp_path)
    r = run(*writing_commands(bundles, folder)[command])
    assert r.returncode == 1, r.stderr[-2000:]
    assert "holds files that llmstart did not write; nothing was changed" in r.stderr
    assert "--overwrite true" in r.stderr and len(r.stderr.strip().splitlines()) <= 3, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == [MINE] and (folder / MINE).read_text() == "my work"


@pytest.mark.parametrize("command", ["tokenizer", "finetune", "compress", "export"])
def test_overwrite_writes_beside_the_users_files(bundles, tmp_path, command):
    folder = users_folder(tmp_path)
    ok(*writing_commands(bundles, folder)[command], "--overwrite", "true")
    assert (folder / MINE).read_text() == "my work"
    marker = json.loads((folder / ".llmstart-output.json").read_text())
    assert marker["command"] == command and MINE not in marker["files"] and "tokenizer.json" in marker["files"]


def test_a_rerun_replaces_only_its_own_files(bundles, tmp_path):
    out = tmp_path / "onnx"
    ok(*writing_commands(bundles, out)["export"], "--quantize", "true")
    assert (out / "model.int8.onnx").exists()
    (out / MINE).write_text("added later by the user")
    ok(*writing_commands(bundles, out)["export"])  # the same command, without --quantize
    assert not (out / "model.int8.onnx").exists()  # its own earlier file: replaced (gone)
    assert (out / MINE).read_text() == "added later by the user"  # the user's: kept
    assert (out / "model.onnx").exists() and not (out / "checkpoints").exists()  # a bundle's files, not a run's


def test_another_command_is_refused_in_a_commands_folder(bundles, tmp_path):
    out = tmp_path / "tok"
    ok(*writing_commands(bundles, out)["tokenizer"])
    r = run(*writing_commands(bundles, out)["export"])
    assert r.returncode == 1 and "holds the output of `llmstart tokenizer`" in r.stderr


def test_a_different_run_in_the_same_folder_does_not_resume(bundles, tmp_path):
    mlm, _ = bundles
    out = tmp_path / "run"

    def finetune(data, *more):
        return run(
            "finetune",
            "--model.backbone",
            mlm,
            "--data.train_file",
            data,
            "--trainer.max_steps",
            3,
            "--trainer.progress_bar",
            "false",
            "--output",
            out,
            *more,
        )

    first = finetune("sample:nli-val")
    assert first.returncode == 0, first.stderr[-2000:]
    weights = (out / "model.safetensors").read_bytes()
    again = finetune("sample:nli-train")  # other data, same folder
    assert again.returncode == 1
    assert "belongs to another run" in again.stderr and "'sample:nli-val' then, 'sample:nli-train' now" in again.stderr
    assert "--resume false" in again.stderr and "resuming" not in again.stderr
    assert (out / "model.safetensors").read_bytes() == weights  # nothing was changed
    fresh = finetune("sample:nli-train", "--resume", "false")
    assert fresh.returncode == 0 and "resuming" not in fresh.stderr, fresh.stderr[-2000:]
    assert json.loads(fresh.stdout.strip().splitlines()[-1])["steps"] == 3
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    # one last.ckpt per run: the old run's replaced, never a last-v1.ckpt
    assert ckpts == ["last.ckpt", "run.json"], ckpts
    same = finetune("sample:nli-train", "--trainer.max_steps", 5)  # the same run, longer: it resumes
    assert same.returncode == 0 and f"resuming from {out / 'checkpoints' / 'last.ckpt'} at step 3" in same.stderr
    assert json.loads(same.stdout.strip().splitlines()[-1])["steps"] == 5
