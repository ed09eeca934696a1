"""Chapter 6 end to end: `llmstart sft`, `dpo`, `eval` and `chat` on a small character-level GPT, bad chat data, the
chat template's ids at training, evaluation and serving, the lm-eval adapter against `llmstart eval`; and chapter 8's
chat server under the official `openai` client, bad input, a client that leaves mid-stream, load, and a real browser."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from llmstart.alignment import (
    add_chat_template,
    chat_ids,
    chat_tokenizer,
    encode_chat,
    evaluate_chat,
    generate_replies,
    lm_eval_model,
    make_instructions,
    write_jsonl,
)
from llmstart.deployment import ChatEngine, ChatRequest
from llmstart.embeddings import train_tokenizer
from llmstart.pretraining import CausalLM, load_gpt
from conftest import cli


def _base(folder: Path, texts, block_size=128, n_embd=64, n_layer=2, seed=0, endless=False) -> Path:
    """A new (untrained) chat-ready GPT bundle: a character tokenizer of `texts` with llmstart's chat template. With
    `endless`, the special tokens' embeddings (tied to the output layer) are zero, so greedy replies are visible
    characters that never end early."""
    torch.manual_seed(seed)
    tok = train_tokenizer(texts, "char", vocab_size=300)
    add_chat_template(tok)
    model = CausalLM(
        tok,
        n_layer=n_layer,
        n_head=4,
        n_embd=n_embd,
        block_size=block_size,
        position="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=False,
    )
    if endless:
        with torch.no_grad():
            model.model.wte.weight[tok.all_special_ids] = 0
    model.save_bundle(folder)
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    "Data files, a base bundle, and the chat bundles `llmstart sft` and `llmstart dpo` make from it."
    d = tmp_path_factory.mktemp("assistant")
    train, test = make_instructions(800, "train"), make_instructions(40, "test")
    write_jsonl(train, d / "train.jsonl")
    write_jsonl(test, d / "test.jsonl")
    write_jsonl(make_instructions(200, "train", preferences=True), d / "prefs.jsonl")
    corpus = (Path(__file__).parent.parent / "llmstart/samples/corpus.txt").read_text().splitlines()
    texts = corpus + [m["content"] for r in train for m in r["messages"]]
    _base(d / "base", texts)
    common = ["--trainer.progress_bar", "false", "--trainer.enable_model_summary", "false"]
    sft = cli(
        "sft",
        "--model",
        str(d / "base"),
        "--data.train_file",
        str(d / "train.jsonl"),
        "--data.block_size",
        "128",
        "--data.batch_size",
        "16",
        "--model.lr",
        "3e-3",
        "--trainer.max_steps",
        "40",
        "--output",
        str(d / "sft"),
        *common,
    )
    assert sft.returncode == 0, sft.stderr[-3000:]
    dpo = cli(
        "dpo",
        "--model",
        str(d / "sft"),
        "--data.train_file",
        str(d / "prefs.jsonl"),
        "--data.block_size",
        "128",
        "--model.lr",
        "1e-4",
        "--trainer.max_steps",
        "10",
        "--trainer.val_check_interval",
        "10",
        "--output",
        str(d / "dpo"),
        *common,
    )
    assert dpo.returncode == 0, dpo.stderr[-3000:]
    return {
        "dir": d,
        "sft": json.loads(sft.stdout.strip().splitlines()[-1]),
        "dpo": json.loads(dpo.stdout.strip().splitlines()[-1]),
        "texts": texts,
    }


def test_sft_and_dpo_write_chat_bundles_with_their_template(work):
    d = work["dir"]
    assert work["sft"]["steps"] == 40 and 0 < work["sft"]["val_loss"] < 3.5
    assert work["dpo"]["steps"] == 10 and 0 <= work["dpo"]["val_reward_accuracy"] <= 1
    for name in ("sft", "dpo"):
        info = json.loads((d / name / "llmstart.json").read_text())
        assert info["task"] == "chat" and info["objective"] == name
        tok = chat_tokenizer(d / name)
        assert "<|assistant|>" in tok.chat_template
    # DPO changed the weights, starting from the SFT model's
    a, b = load_gpt(str(d / "sft")), load_gpt(str(d / "dpo"))
    assert not torch.equal(a.wte.weight, b.wte.weight)


def test_sft_with_lora_merges_the_adapters(work, tmp_path):
    d = work["dir"]
    r = cli(
        "sft",
        "--model",
        str(d / "base"),
        "--data.train_file",
        str(d / "train.jsonl"),
        "--data.block_size",
        "128",
        "--model.lora_r",
        "4",
        "--model.lr",
        "1e-2",
        "--trainer.max_steps",
        "5",
        "--output",
        str(tmp_path / "lora"),
        "--trainer.progress_bar",
        "false",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "lora" / "model.safetensors")
    assert not any("lora" in k for k in weights)  # merged: a plain GPT
    base, tuned = load_gpt(str(d / "base")), load_gpt(str(tmp_path / "lora"))
    assert not torch.equal(base.blocks[0].attn.q_proj.weight, tuned.blocks[0].attn.q_proj.weight)
    assert torch.equal(base.wte.weight, tuned.wte.weight)  # LoRA leaves the embeddings alone


def test_eval_command_exact_match_multiple_choice_and_perplexity(work, tmp_path):
    d = work["dir"]
    r = cli("eval", "--model", str(d / "sft"), "--data", str(d / "test.jsonl"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["task"] == "exact" and out["examples"] == 40 and 0 <= out["exact_match"] <= 1
    # the same figure from the library, and from the bundle's evaluator (llmstart evaluate)
    assert evaluate_chat(str(d / "sft"), str(d / "test.jsonl"))["exact_match"] == out["exact_match"]
    mc = [
        {"context": f"What is {a} + {b}? Answer:", "choices": [str(a + b), str(a + b + 1), str(a + b + 2)], "label": 0}
        for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]
    ]
    write_jsonl(mc, tmp_path / "mc.jsonl")
    out = json.loads(cli("eval", "--model", str(d / "sft"), "--data", str(tmp_path / "mc.jsonl")).stdout)
    assert out["task"] == "mc" and out["examples"] == 4 and 0 <= out["acc"] <= 1 and 0 <= out["acc_norm"] <= 1
    (tmp_path / "text.txt").write_text("\n".join(work["texts"][:40]))
    out = json.loads(cli("eval", "--model", str(d / "sft"), "--data", str(tmp_path / "text.txt")).stdout)
    assert out["task"] == "perplexity" and out["perplexity"] > 1 and out["tokens"] > 100


def test_the_same_token_ids_at_training_evaluation_and_serving(work):
    d = work["dir"]
    tok = chat_tokenizer(d / "sft")
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Add 1 and 1."},
        {"role": "assistant", "content": "2"},
    ]
    train = encode_chat(tok, conv)
    prompt = chat_ids(tok, conv[:-1], add_generation_prompt=True)  # evaluation (generate_replies) encodes this
    assert train["input_ids"][: len(prompt)] == prompt
    reply = [i for i, l in zip(train["input_ids"], train["labels"]) if l != -100]
    assert tok.decode(reply) == "5<|end|>2<|end|>"  # the assistant's turns and their ends: nothing else is a target
    engine = ChatEngine(str(d / "sft"), slots=1)
    served, _ = engine.prepare(ChatRequest(messages=conv[:-1]))
    assert served == prompt


def test_bad_chat_data_is_refused_with_its_line(work, tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    cases = {
        "role": [good, {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}],
        "no text content": [
            good,
            {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},
        ],
        "not the assistant's": [good, {"messages": [{"role": "user", "content": "hi"}]}],
        "'messages'": [good, {"text": "hi"}],
    }
    for what, rows in cases.items():
        write_jsonl(rows, tmp_path / "bad.jsonl")
        r = cli(
            "sft",
            "--model",
            str(work["dir"] / "base"),
            "--data.train_file",
            str(tmp_path / "bad.jsonl"),
            "--trainer.max_steps",
            "1",
            "--output",
            str(tmp_path / "out"),
        )
        assert r.returncode != 0 and "line 2" in r.stderr and what in r.stderr, (what, r.stderr[-800:])
    (tmp_path / "broken.jsonl").write_text(json.dumps(good) + "\n{broken\n")
    r = cli("eval", "--model", str(work["dir"] / "sft"), "--data", str(tmp_path / "broken.jsonl"))
    assert r.returncode != 0 and "line 2" in r.stderr and "broken JSON" in r.stderr


def test_chat_repl_streams_keeps_history_and_resets(work):
    r = subprocess.run(
        [
            shutil.which("llmstart"),
            "chat",
            "--model",
            str(work["dir"] / "sft"),
            "--temperature",
            "0",
            "--max-new-tokens",
            "20",
        ],
        input="What is 2 + 3?\nAdd 4 and 4.\n/reset\nList the words: cat dog owl\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("> ") == 5 and "(conversation reset)" in r.stdout
    # the reply after /reset is the reply to that message alone (greedy): the history was forgotten
    tok, gpt = chat_tokenizer(work["dir"] / "sft"), load_gpt(str(work["dir"] / "sft"))
    alone = generate_replies(gpt, tok, [[{"role": "user", "content": "List the words: cat dog owl"}]], 20)[0]
    assert alone in r.stdout


def test_lm_eval_scores_a_local_task_as_llmstart_eval_does(work, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    rows = [
        {
            "context": f"Question: what is {a} + {b}?\nAnswer:",
            "choices": [str(a + b), str(a + b + 1), "many"],
            "label": (a + b) % 3,
        }
        for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (0, 7), (6, 3)]
    ]
    write_jsonl(rows, tmp_path / "mc.jsonl")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "llmstart_mc.yaml").write_text(
        "task: llmstart_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: "
        + str(tmp_path / "mc.jsonl")
        + "\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{context}}'\ndoc_to_target: '{{label}}'\n"
        "doc_to_choice: '{{choices}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    bundle = str(work["dir"] / "sft")
    results = lm_eval.simple_evaluate(
        model=lm_eval_model(bundle),
        tasks=["llmstart_mc"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        log_samples=False,
    )
    theirs = results["results"]["llmstart_mc"]
    ours = evaluate_chat(bundle, str(tmp_path / "mc.jsonl"))
    assert theirs["acc,none"] == pytest.approx(ours["acc"]) and theirs["acc_norm,none"] == pytest.approx(
        ours["acc_norm"]
    )


def test_sft_refuses_an_output_folder_that_holds_a_users_files(work, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my work")
    r = cli(
        "sft",
        "--model",
        str(work["dir"] / "base"),
        "--data.train_file",
        str(work["dir"] / "train.jsonl"),
        "--trainer.max_steps",
        "1",
        "--output",
        str(mine),
    )
    assert r.returncode == 1 and "did not write" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert (mine / "notes.txt").read_text() == "my work" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_model_without_the_chat_template_is_refused_for_chats(work, tmp_path):
    tok = train_tokenizer(work["texts"], "char", vocab_size=300)  # no chat template: a plain pretrained model
    CausalLM(tok, n_layer=1, n_head=2, n_embd=32, block_size=128).save_bundle(tmp_path / "plain")
    d = work["dir"]
    for command in (["eval", "--data", str(d / "test.jsonl")], ["chat"]):
        r = cli(command[0], "--model", str(tmp_path / "plain"), *command[1:])
        assert r.returncode == 1 and "has no chat template" in r.stderr and "llmstart sft" in r.stderr, r.stderr[-800:]
    # plain text still works: perplexity
    (tmp_path / "text.txt").write_text("\n".join(work["texts"][:20]))
    assert (
        json.loads(cli("eval", "--model", str(tmp_path / "plain"), "--data", str(tmp_path / "text.txt")).stdout)[
            "perplexity"
        ]
        > 1
    )
