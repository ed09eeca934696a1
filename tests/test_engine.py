"""Chapter 8's generation engine: continuous batching gives every request the tokens it gets alone (greedy and
seeded sampling, mixed prompt and reply lengths, chunked prefill, GQA, both position kinds), frees slots on cancel,
refuses what it cannot do, and serves many threads at once; speculative decoding gives the target's greedy output
whatever the draft."""

import threading
import time

import pytest
import torch

from llmstart.core import UsageError
from llmstart.deployment import BatchEngine, QueueTimeout, mixed_requests, replay, speculative_generate
from llmstart.pretraining import stream_text
from llmstart.transformer import GPT, GPTConfig


def model(position="rope", n_kv_head=2, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=100, block_size=256, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=64, position=position
    )
    return GPT(cfg).eval()


def alone(m, prompt, n):
    return m.generate(torch.tensor([prompt]), n, temperature=0)[0, len(prompt) :].tolist()


@pytest.mark.parametrize("position,n_kv_head", [("rope", 2), ("learned", 4)])
@pytest.mark.parametrize("policy", ["continuous", "static"])
def test_greedy_output_equals_single_request_generation(position, n_kv_head, policy):
    m = model(position, n_kv_head)
    requests = mixed_requests(20, 100, prompt=(1, 60), new=(1, 80), seed=1)
    assert len({len(p) for p, _ in requests}) > 10 and len({n for _, n in requests}) > 10  # mixed lengths
    engine = BatchEngine(m, slots=5, prefill_chunk=16, policy=policy)  # prompts longer than a chunk: read over steps
    jobs = [engine.submit(p, n) for p, n in requests]
    engine.run()
    for (p, n), job in zip(requests, jobs):
        assert job.result() == alone(m, p, n)
        assert job.finish_reason == "length" and len(job.tokens) == n
    assert engine.active == 0 and int(engine.cache.lengths.sum()) == 0  # every slot free again
    busy = [rows for rows, _ in engine.trace]
    assert max(busy) == 5  # requests really were decoded together


def test_closed_loop_replay_equals_alone_and_batching_wins_steps():
    m = model()
    requests = mixed_requests(24, 100, prompt=(4, 40), new=(4, 64), seed=2)
    one = replay(BatchEngine(m, slots=1), requests, streams=8)
    static = replay(BatchEngine(m, slots=8, policy="static"), requests, streams=8)
    cont = replay(BatchEngine(m, slots=8), requests, streams=8)
    want = [alone(m, p, n) for p, n in requests]
    for r in (one, static, cont):
        assert [j.tokens for j in r["jobs"]] == want
    # fewer decoding steps for the same tokens: continuous < static < one at a time
    assert cont["steps"] < static["steps"] < one["steps"]


def test_seeded_sampling_and_stop_tokens_match_stream_text():
    m = model()

    class Tok:  # the few calls stream_text makes of a tokenizer
        eos_token_id, unk_token_id = None, None

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(65 + i % 26) for i in ids)

    prompts = [[1, 2, 3], list(range(10, 40)), [7]]
    engine = BatchEngine(m, slots=3)
    jobs = [engine.submit(p, 40, temperature=0.9, top_p=0.95, seed=s, stop=[5, 6]) for s, p in enumerate(prompts)]
    engine.run()
    for s, (p, job) in enumerate(zip(prompts, jobs)):
        seen = []
        list(
            stream_text(m, Tok(), p, 40, temperature=0.9, top_p=0.95, seed=s, eos_token_id=[5, 6], on_token=seen.append)
        )
        got = job.result()
        ended = job.finish_reason == "stop"
        assert (got[:-1] if ended else got) == seen
        assert not ended or got[-1] in (5, 6)


def test_cancel_deadline_and_close():
    m = model()
    engine = BatchEngine(m, slots=1)
    long = engine.submit([1, 2, 3], 200)
    queued = engine.submit([4, 5], 10, deadline=time.monotonic() + 0.05)
    for _ in range(3):
        engine.step()
    assert engine.active == 1 and len(long.tokens) == 4  # the first step reads the prompt (a token) and decodes one
    long.cancel()
    time.sleep(0.06)
    engine.step()  # the cancelled job leaves; the queued one is past its deadline: refused, not run
    assert long.finish_reason == "cancelled" and len(long.tokens) == 4
    with pytest.raises(QueueTimeout):
        queued.result()
    assert engine.active == 0 and not engine.waiting
    last, waiting = engine.submit([1], 5), engine.submit([2], 5)
    engine.step()
    engine.close()  # lets the running job finish, cancels the waiting one, then takes nothing more
    assert last.result() == alone(m, [1], 5)
    assert waiting.result() == [] and waiting.finish_reason == "cancelled"
    with pytest.raises(UsageError, match="shutting down"):
        engine.submit([1], 5)


def test_bad_requests_are_refused_with_what_to_change():
    engine = BatchEngine(model(), slots=2)
    with pytest.raises(UsageError, match="lower max_new_tokens to 246"):
        engine.submit(list(range(10)), 300)
    with pytest.raises(UsageError, match="empty"):
        engine.submit([], 5)
    with pytest.raises(UsageError, match="temperature"):
        engine.submit([1], 5, temperature=-1)
    with pytest.raises(UsageError, match="policy"):
        BatchEngine(model(), policy="fifo")
    with pytest.raises(UsageError, match="slots"):
        BatchEngine(model(), slots=0)


def test_background_loop_serves_many_threads():
    m = model()
    engine = BatchEngine(m, slots=4).start()
    requests = mixed_requests(16, 100, prompt=(1, 30), new=(1, 40), seed=3)
    results = {}

    def client(i):
        results[i] = engine.submit(*requests[i]).result()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.close()
    assert [results[i] for i in range(len(requests))] == [alone(m, p, n) for p, n in requests]


def test_speculative_decoding_gives_the_targets_greedy_output_whatever_the_draft():
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=50, block_size=128, n_layer=2, n_head=2, n_embd=64, position="rope", norm="rmsnorm", mlp="swiglu"
    )
    target = GPT(cfg).eval()
    with torch.no_grad():  # sharper logits than at initialisation: greedy text that changes, as a trained model's does
        for p in target.parameters():
            if p.dim() == 2:
                p.mul_(4)
    acceptance = []
    for noise in (0.0, 0.2, 2.0):  # the target itself, a near copy, a stranger
        draft = GPT(cfg).eval()
        draft.load_state_dict({k: v + noise * v.std() * torch.randn_like(v) for k, v in target.state_dict().items()})
        for s, k in enumerate((1, 3, 6)):
            prompt = torch.randint(0, 50, (1, 7 + 5 * s))
            out, stats = speculative_generate(target, draft, prompt, 50, k=k)
            assert torch.equal(out, target.generate(prompt, 50, temperature=0))
            acceptance.append(stats["acceptance"])
            assert stats["accepted"] <= stats["drafted"] and stats["rounds"] <= 50
    assert acceptance[:3] == [1.0, 1.0, 1.0] and min(acceptance[6:]) < 0.5  # the draft's quality shows in the rate
    # an end token stops both the same way; the context and the vocabulary are checked
    prompt = torch.randint(0, 50, (1, 5))
    plain = target.generate(prompt, 40, temperature=0)
    end = int(plain[0, 15])
    out, _ = speculative_generate(target, draft, prompt, 40, k=4, eos_token_id=end)
    assert torch.equal(out, target.generate(prompt, 40, temperature=0, eos_token_id=end)) and int(out[0, -1]) == end
    with pytest.raises(UsageError, match="lower max_new_tokens to 123"):
        speculative_generate(target, draft, prompt, 200)
    other = GPT(GPTConfig(**{**cfg.to_dict(), "vocab_size": 60})).eval()
    with pytest.raises(UsageError, match="tokenizer"):
        speculative_generate(target, other, prompt, 10)
