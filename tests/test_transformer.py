"""Chapter 3: the GPT against transformers' GPT-2 and Llama, the KV cache, bad input; `llmstart generate` end to end on
a character-level GPT pretrained by `llmstart pretrain --config shakespeare-char`."""

import json

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from llmstart.core import UsageError
from llmstart.pretraining import load_gpt
from llmstart.transformer import GPT, GPTConfig, KVCache
from conftest import cli


def llama(**kw):
    config = dict(
        vocab_size=500,
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=96,
    )
    return LlamaForCausalLM(LlamaConfig(**{**config, **kw})).eval()


def gpt2(**kw):
    config = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=500, n_positions=96, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(GPT2Config(**{**config, **kw})).eval()


@pytest.mark.parametrize(
    "make", [gpt2, llama, lambda: llama(tie_word_embeddings=True, attention_bias=True, mlp_bias=True)]
)
def test_from_hf_gives_the_same_logits_with_padding_and_in_float64(make):
    torch.manual_seed(0)
    hf = make().double()
    ours = GPT.from_hf(hf).double()
    ids = torch.randint(0, 500, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0  # right padding: the real positions must not see it
    with torch.no_grad():
        a, b = ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (a[real] - b[real]).abs().max() < 1e-6  # float32 rotary angles, as both compute them


def test_greedy_generation_is_the_same_with_and_without_the_cache():
    torch.manual_seed(1)
    for model in (GPT.from_hf(gpt2()), GPT.from_hf(llama())):
        prompt = torch.randint(0, 500, (3, 11))
        cached = model.generate(prompt, 60, use_cache=True, temperature=0)
        uncached = model.generate(prompt, 60, use_cache=False, temperature=0)
        assert cached.shape == (3, 71) and torch.equal(cached, uncached)


def test_greedy_generation_matches_transformers_generate():
    torch.manual_seed(2)
    hf = llama()
    ours = GPT.from_hf(hf)
    prompt = torch.randint(1, 500, (1, 9))
    theirs = hf.generate(
        prompt, max_new_tokens=40, do_sample=False, min_new_tokens=40, eos_token_id=None, pad_token_id=0
    )
    assert torch.equal(ours.generate(prompt, 40, temperature=0), theirs)


def test_sampling_is_reproducible_and_follows_its_settings():
    model = GPT.from_hf(gpt2())
    prompt = torch.zeros(2, 4, dtype=torch.long)
    run = lambda seed, **kw: model.generate(prompt, 30, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(5, temperature=1.0, top_k=20), run(5, temperature=1.0, top_k=20))
    assert not torch.equal(run(5, temperature=1.0), run(6, temperature=1.0))
    assert torch.equal(run(5, temperature=1.0, top_k=1), model.generate(prompt, 30, temperature=0))  # top-1 is greedy


def test_eos_stops_generation():
    model = GPT.from_hf(gpt2())
    prompt = torch.randint(1, 500, (1, 5))
    first = int(model.generate(prompt, 1, temperature=0)[0, -1])
    out = model.generate(prompt, 50, temperature=0, eos_token_id=first)
    assert out.shape[1] == 6 and int(out[0, -1]) == first


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=130, n_head=4), "n_embd=130 does not divide into n_head=4"),
        (dict(n_head=6, n_kv_head=4), "divisors of n_head, [1, 2, 3, 6]"),
        (dict(position="alibi"), "position='alibi' is not one of"),
    ],
)
def test_impossible_configs_say_what_to_change(kwargs, message):
    with pytest.raises(UsageError) as e:
        GPTConfig(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, p: m.generate(p, 90), "lower max_new_tokens to 86"),
        (lambda m, p: m.generate(torch.zeros(1, 97, dtype=torch.long), 1), "shorten the prompt below 96 tokens"),
        (lambda m, p: m.generate(p[:, :0], 5), "the prompt is empty"),
        (lambda m, p: m.generate(p, 0), "max_new_tokens must be at least 1"),
        (lambda m, p: m.generate(p, 5, temperature=-1), "temperature must be 0 (greedy) or positive"),
        (lambda m, p: m.generate(p, 5, top_p=0), "top_p must be in (0, 1]"),
        (lambda m, p: m.generate(p, 5, top_k=0), "top_k must be at least 1"),
        (lambda m, p: m(torch.zeros(1, 97, dtype=torch.long)), "the model's context is 96"),
    ],
)
def test_generation_past_the_context_or_with_bad_settings_is_refused(call, message):
    model = GPT.from_hf(gpt2())
    with pytest.raises(UsageError) as e:
        call(model, torch.zeros(1, 10, dtype=torch.long))
    assert message in str(e.value)


def test_from_hf_refuses_other_architectures():
    with pytest.raises(UsageError, match="not BertForMaskedLM: give a GPT-2 or Llama-architecture checkpoint"):
        GPT.from_hf(BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2)))


def test_kv_cache_of_grouped_query_attention_is_smaller():
    mha = KVCache(GPTConfig(n_layer=2, n_head=8, n_embd=64, block_size=32), 1, 32)
    gqa = KVCache(GPTConfig(n_layer=2, n_head=8, n_kv_head=2, n_embd=64, block_size=32), 1, 32)
    assert mha.k.numel() == 4 * gqa.k.numel() == 2 * 8 * 32 * 8


def test_a_saved_gpt_and_a_converted_checkpoint_load_as_gpt(tmp_path):
    hf = gpt2()
    hf.save_pretrained(tmp_path / "hf")
    converted = load_gpt(str(tmp_path / "hf"))
    converted.save_pretrained(tmp_path / "ours")
    again = load_gpt(str(tmp_path / "ours"), dropout=0.1)
    ids = torch.randint(0, 500, (2, 20))
    with torch.no_grad():
        assert torch.allclose(again.eval()(ids).logits, hf(ids).logits, atol=1e-5)
    assert again.config.dropout == 0.1 and isinstance(again, GPT)


def pretrain_char(shared, out, steps: int, *options) -> dict:
    "`llmstart pretrain --config shakespeare-char` on Tiny Shakespeare for `steps` steps, validated once at the end."
    r = cli(
        "pretrain",
        "--config",
        "shakespeare-char",
        "--data.source",
        str(shared("tinyshakespeare.txt")),
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.limit_val_batches",
        "40",
        "--trainer.output_dir",
        str(out),
        "--trainer.progress_bar",
        "false",
        *options,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["val_loss"] < 2.7, result  # it learned something: uniform over 65 characters is 4.17
    return result


@pytest.fixture(scope="module")
def char_bundle(tmp_path_factory, shared):
    "A small character-level GPT bundle: the shakespeare-char recipe cut to 150 steps."
    return pretrain_char(shared, tmp_path_factory.mktemp("char") / "run", 150)["bundle"]


def test_generate_streams_text_from_a_pretrained_bundle(char_bundle):
    r = cli("generate", "--model", char_bundle, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    text = r.stdout[:-1]  # (the last newline is the command's own)
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 40  # one character per token
    again = cli(
        "generate", "--model", char_bundle, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0"
    )
    assert again.stdout == r.stdout  # greedy: the same text every time
    sampled = [
        cli("generate", "--model", char_bundle, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", s).stdout
        for s in ("1", "1", "2")
    ]
    assert sampled[0] == sampled[1] != sampled[2]
    full = cli("generate", "--model", char_bundle, "--prompt", "ROMEO:", "--temperature", "0")  # no --max-new-tokens
    assert len(full.stdout[:-1]) == 65 and full.stdout.startswith(text)  # the rest of the context


def test_generate_refuses_bad_requests_with_a_clear_error(char_bundle, tmp_path):
    r = cli("generate", "--model", char_bundle, "--prompt", "ROMEO:", "--max-new-tokens", "500")
    assert r.returncode == 1 and "past the model's context of 65 tokens: lower max_new_tokens to 59" in r.stderr
    assert r.stdout == ""  # nothing printed before the error
    r = cli("generate", "--model", char_bundle, "--prompt", "x", "--top-p", "1.5", "--max-new-tokens", "5")
    assert r.returncode == 1 and "top_p must be in (0, 1]" in r.stderr
    r = cli("generate", "--model", str(tmp_path), "--prompt", "x")
    assert r.returncode == 1 and "not an llmstart bundle" in r.stderr


def test_a_generate_bundle_is_evaluated_by_evaluate(char_bundle, shared, tmp_path):
    text = shared("tinyshakespeare.txt").read_text()
    (tmp_path / "val.txt").write_text(text[int(len(text) * 0.9) :][:20_000])
    r = cli("evaluate", "--model", char_bundle, "--data", str(tmp_path / "val.txt"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["task"] == "causal-lm" and 1.5 < out["loss"] < 2.8 and out["tokens"] > 19_000


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, on which FSDP runs")
def test_fsdp_without_a_gpu_is_refused_with_what_to_use(tmp_path):
    r = cli(
        "pretrain",
        "--config",
        "shakespeare-char",
        "--data.source",
        "sample:corpus",
        "--trainer.strategy",
        "fsdp",
        "--trainer.output_dir",
        str(tmp_path / "run"),
    )
    assert r.returncode == 1 and "Lightning runs it on CUDA only" in r.stderr and "--trainer.strategy ddp" in r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP needs a GPU (Lightning runs it on CUDA only)")
def test_fsdp_on_a_gpu_trains_and_writes_a_bundle_that_generates(tmp_path, shared):
    out = pretrain_char(shared, tmp_path / "run", 200, "--trainer.strategy", "fsdp", "--trainer.devices", "1")
    g = cli("generate", "--model", out["bundle"], "--prompt", "ROMEO:", "--max-new-tokens", "20", "--temperature", "0")
    assert g.returncode == 0 and g.stdout.startswith("ROMEO:"), g.stderr[-2000:]


def test_a_batch_stops_when_every_row_has_ended_and_ended_rows_repeat_their_end():
    torch.manual_seed(3)
    model = GPT.from_hf(gpt2())
    prompts = torch.randint(1, 500, (2, 6))
    greedy = model.generate(prompts, 12, temperature=0)[:, 6:]
    ends = [int(greedy[0, 2]), int(greedy[1, 1])]  # a list of end tokens, as Llama 3 has
    first = [next(i for i, t in enumerate(row.tolist()) if t in ends) for row in greedy]
    out = model.generate(prompts, 12, temperature=0, eos_token_id=ends)[:, 6:]
    assert out.shape[1] == max(first) + 1  # stopped once every row had ended
    for row, f in enumerate(first):
        assert torch.equal(out[row, : f + 1], greedy[row, : f + 1])  # the same tokens up to its end
        assert (out[row, f:] == out[row, f]).all()  # then its end token again


def test_generation_runs_in_eval_mode_and_restores_training_mode():
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.5)).train()
    prompt = torch.zeros(1, 4, dtype=torch.long)
    assert torch.equal(
        model.generate(prompt, 10, temperature=0), model.generate(prompt, 10, temperature=0, use_cache=False)
    )
    assert model.training  # as it was


def test_from_hf_refuses_rotary_scaling_it_does_not_implement():
    with pytest.raises(UsageError, match="rope_type 'linear' is not supported"):
        GPT.from_hf(llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))


def test_generate_refuses_a_prompt_with_unknown_characters(char_bundle):
    r = cli("generate", "--model", char_bundle, "--prompt", "ROMEO: 東京", "--max-new-tokens", "5")
    assert r.returncode == 1 and "the prompt has text the model never saw ('東', '京')" in r.stderr
