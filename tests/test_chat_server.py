"""Chapter 8's chat server: OpenAI's chat completions API under the official `openai` client (create, stream, stop,
max_tokens, temperature), bad input answered 4xx in OpenAI's error format, the API key and body limit, a client that
leaves mid-stream freeing its slot, 200 streamed requests from 16 clients, and the chat page in a real browser."""

import shutil
import time
from pathlib import Path

import httpx
import pytest

from llmstart.alignment import SFT, chat_tokenizer, generate_replies
from llmstart.deployment import ServerProcess, load_chat_test
from llmstart.pretraining import load_gpt
from test_assistant import _base

KEY = "test-key"
HI = [{"role": "user", "content": "List the words: cat dog owl"}]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    "A small chat bundle (untrained: these tests are about the server), and a large-context one for long replies."
    d = tmp_path_factory.mktemp("chat")
    corpus = (Path(__file__).parent.parent / "llmstart/samples/corpus.txt").read_text().splitlines()
    _base(d / "base", corpus, endless=True)
    SFT(str(d / "base")).save_bundle(d / "chat")
    _base(d / "long-base", corpus, block_size=2048, n_embd=128, n_layer=4, seed=3, endless=True)
    SFT(str(d / "long-base")).save_bundle(d / "long")
    return d


@pytest.fixture(scope="module")
def server(bundles):
    with ServerProcess(bundles / "chat", api_key=KEY, slots=2) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def greedy(bundle, messages, n):
    return generate_replies(load_gpt(str(bundle)), chat_tokenizer(bundle), [messages], n)[0]


def test_create_and_stream_with_the_openai_client_give_the_greedy_reply(client, bundles):
    r = client.chat.completions.create(model="chat", messages=HI, temperature=0, max_tokens=30)
    expected = greedy(bundles / "chat", HI, 30)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected and expected
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 30 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=HI, temperature=0, max_tokens=30, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_max_tokens_stop_and_temperature(client):
    r = client.chat.completions.create(model="chat", messages=HI, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    full = client.chat.completions.create(model="chat", messages=HI, temperature=0, max_tokens=40).choices[0]
    text = full.message.content
    if len(text) > 4:  # a stop string taken from inside the greedy reply cuts it there
        stop = text[2:4]
        cut = client.chat.completions.create(model="chat", messages=HI, temperature=0, max_tokens=40, stop=[stop])
        assert cut.choices[0].message.content == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    a = client.chat.completions.create(model="chat", messages=HI, temperature=1.5, seed=7, max_tokens=20)
    b = client.chat.completions.create(model="chat", messages=HI, temperature=1.5, seed=7, max_tokens=20)
    c = client.chat.completions.create(model="chat", messages=HI, temperature=1.5, seed=8, max_tokens=20)
    assert a.choices[0].message.content == b.choices[0].message.content  # a seed makes sampling repeatable
    assert a.choices[0].message.content != c.choices[0].message.content


@pytest.mark.parametrize(
    "body, status, names",
    [
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, 400, "content"),
        ({"messages": [{"role": "user", "content": 3}]}, 400, "content"),
        ({"messages": HI, "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": HI, "max_tokens": 100_000}, 400, "max_tokens"),
        ({"messages": HI, "max_tokens": 120}, 400, "context"),  # prompt + reply past the 128-token context
        ({"messages": [{"role": "user", "content": "word " * 40}]}, 400, "context"),
        ({"messages": HI, "temperature": -1}, 400, "temperature"),
        ({"messages": HI, "temperature": 2.5}, 400, "temperature"),
        ({"messages": HI, "top_p": 0}, 400, "top_p"),
        ({"messages": HI, "n": 2}, 400, "n"),
        ({"messages": HI, "tools": [{"type": "function"}]}, 400, "tools"),
        ({"messages": HI, "logprobs": True}, 400, "logprobs"),
        ({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"prompt": "hi"}, 400, "messages"),
    ],
)
def test_bad_requests_get_openai_errors_that_name_the_problem(server, body, status, names):
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert names in err["message"] and err["type"] == "invalid_request_error" and "code" in err
    assert httpx.get(server.url + "/health").status_code == 200


def test_key_body_limit_and_broken_json(server):
    url = server.url + "/v1/chat/completions"
    r = httpx.post(url, json={"messages": HI})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.post(url, json={"messages": HI}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(url, json={"messages": HI, "max_tokens": 2}, headers={"X-API-Key": KEY}).status_code == 200
    big = {"messages": [{"role": "user", "content": "x" * 600_000}]}
    r = httpx.post(url, json=big, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").status_code == 200  # no key needed
    models = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert models["data"][0]["id"] == "chat"


def test_a_client_that_leaves_mid_stream_frees_its_slot(bundles):
    with ServerProcess(bundles / "long", slots=1, max_tokens=2000) as s:
        body = {
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 1500,
            "temperature": 0,
            "stream": True,
        }
        t0 = time.time()
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            events = [next(lines) for _ in range(6)]  # the reply is under way
            assert any('"content"' in e for e in events)
            assert httpx.get(s.url + "/info").json()["active"] == 1
        # the connection is closed: the slot frees at the next token, long before 1,500 tokens are written
        for _ in range(100):
            if httpx.get(s.url + "/info").json()["active"] == 0:
                break
            time.sleep(0.05)
        freed = time.time() - t0
        assert httpx.get(s.url + "/info").json()["active"] == 0
        t0 = time.time()
        whole = httpx.post(s.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=120).json()
        assert whole["usage"]["completion_tokens"] > 1000  # what the client would have waited for
        assert freed < (time.time() - t0) / 3


def test_200_streamed_requests_from_16_clients_without_an_error(server):
    report = load_chat_test(
        server.url,
        [HI, [{"role": "user", "content": "What is 2 + 3?"}]],
        requests=200,
        concurrency=16,
        max_tokens=16,
        api_key=KEY,
    )
    assert report["errors"] == 0 and report["requests"] == 200
    assert report["ttft_p50_ms"] <= report["ttft_p99_ms"] and report["tokens_per_s"] > 0


def test_the_chat_page_streams_a_reply_in_a_real_browser(server, client, tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")  # a fresh profile, removed with tmp_path
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        browser.get(server.url + "/")
        assert "chat" in browser.title
        browser.find_element(By.ID, "key").send_keys(KEY)
        temperature = browser.find_element(By.ID, "temperature")  # greedy, so the reply is known (sampled at 0.7, an
        temperature.clear()  # untrained model may end its reply at once)
        temperature.send_keys("0")
        browser.find_element(By.ID, "input").send_keys("List the words: cat dog owl")
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, 60).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, ".assistant[data-state=done], .error")
        )
        errors = browser.find_elements(By.CSS_SELECTOR, ".error")
        assert not errors, errors[0].text
        reply = browser.find_element(By.CSS_SELECTOR, ".assistant").text
        expected = client.chat.completions.create(model="chat", messages=HI, temperature=0).choices[0].message.content
        assert expected.strip() and reply.split() == expected.split()  # the browser folds runs of white space
        assert browser.find_element(By.CSS_SELECTOR, ".user").text == "List the words: cat dog owl"
    finally:
        browser.quit()
