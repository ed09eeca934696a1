#!/usr/bin/env python
"""The classifier server against a minimal LitServe server, on a CPU, in one run: all-MiniLM-L6-v2 fine-tuned on SNLI
pairs and exported to ONNX (float and int8), served several ways, each under the same load -- 2,000 requests of one
pair each from 32 concurrent clients, after a warm-up, one server at a time:

- the peer: a minimal LitServe server (the bundle's PyTorch model through `transformers`, a pydantic request model,
  max_batch_size 16, batch_timeout 10 ms; its script is written below, in full);
- `llmstart serve` with its default settings (`--backend auto`: for this bundle, its int8 ONNX model; dynamic batching
  16 / 10 ms);
- `llmstart serve` with `--backend torch`, with `--backend onnx`, with `--max_batch_size 1`, and on the int8 bundle
  chapter 7's `quantize_int8` makes of the same model (torch.ao's dynamic int8 kernels).

It prints requests per second and p50 / p99 latency for each, held-out accuracy of each model (an int8 default would
need to stay within 0.5 point of float), where the time of a request goes (validation, tokenization, the model: each
measured alone, per request, at the batch sizes the server forms), and ends with one JSON line:
`llmstart_vs_minimal` (requests/s, default settings against the peer; goal >= 1.2) and `batching_vs_unbatched`
(goal >= 3).

    python bench/serving.py [--data ../shared/data/snli_dev.jsonl] [--train 8000]     # ~9 minutes on 2 CPU cores
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import httpx
import lightning as L
import numpy as np

from llmstart.bundle import read_bundle
from llmstart.data import ClassificationDataModule, load_classification, minilm_path
from llmstart.deployment import PredictRequest, ServerProcess, _encode, export_onnx, free_port, load_backend, load_test
from llmstart.finetuning import SequenceClassifier, load_classifier
from llmstart.optimization import quantize_int8, save_int8_bundle
from llmstart.training import fit, make_trainer

LABELS = ["entailment", "neutral", "contradiction"]

MINIMAL = """
import sys

import litserve as ls
import torch
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class Pair(BaseModel):
    premise: str
    hypothesis: str


class API(ls.LitAPI):
    def setup(self, device):
        self.tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
        self.model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()

    def decode_request(self, request: Pair):
        return request.premise, request.hypothesis

    def batch(self, inputs):
        return inputs

    def predict(self, pairs):
        premises, hypotheses = zip(*pairs)
        enc = self.tokenizer(list(premises), list(hypotheses), padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            return self.model(**enc).logits.softmax(-1).tolist()

    def unbatch(self, output):
        return output

    def encode_response(self, probabilities):
        return {"probabilities": probabilities}


if __name__ == "__main__":
    server = ls.LitServer(API(max_batch_size=16, batch_timeout=0.01), accelerator="cpu")
    server.run(host="127.0.0.1", port=int(sys.argv[2]), generate_client_file=False)
"""


class Minimal:
    "The peer's script, started in its own process group; stopped with Ctrl-C, then SIGKILL for what is left."

    def __init__(self, bundle: Path, folder: Path):
        (folder / "minimal_server.py").write_text(MINIMAL)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "minimal.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(folder / "minimal_server.py"), str(bundle), str(self.port)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(600):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
            if self.proc.poll() is not None:
                break
        raise RuntimeError("the minimal server did not start:\n" + self.log.read_text()[-2000:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(15)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def measured(server, bodies, requests: int, concurrency: int) -> dict:
    load_test(server.url, bodies, requests=64, concurrency=8)  # warm-up
    r = load_test(server.url, bodies, requests=requests, concurrency=concurrency)
    return {k: r[k] for k in ("requests", "concurrency", "errors", "rps", "p50_ms", "p99_ms")}


def where_the_time_goes(bundle: Path, int8_bundle: Path, pairs: list, batch: int = 16, repeats: int = 20) -> dict:
    "Per request, in ms: validating its body, tokenizing it within a batch of `batch`, and each backend's forward pass."
    bodies = [{"premise": p, "hypothesis": h} for p, h in pairs[: batch * repeats]]
    t0 = time.perf_counter()
    for b in bodies:
        PredictRequest.model_validate(b).examples()
    costs = {"validation": (time.perf_counter() - t0) * 1e3 / len(bodies)}
    backends = {name: load_backend(bundle, name) for name in ("torch", "onnx", "onnx-int8")}
    backends["torch.ao int8"] = load_backend(int8_bundle, "torch")
    tokenizer = backends["torch"].tokenizer
    batches = [pairs[i * batch : (i + 1) * batch] for i in range(repeats)]
    t0 = time.perf_counter()
    encoded = [_encode(tokenizer, b, 128, backends["onnx"].inputs) for b in batches]
    costs["tokenization"] = (time.perf_counter() - t0) * 1e3 / (batch * repeats)
    for name, backend in backends.items():
        backend(encoded[0])  # warm-up
        t0 = time.perf_counter()
        for enc in encoded:
            backend(enc)
        costs[f"model ({name})"] = (time.perf_counter() - t0) * 1e3 / (batch * repeats)
    return {k: round(v, 3) for k, v in costs.items()}


def accuracy(bundle: Path, rows: list, backend: str) -> float:
    b = load_backend(bundle, backend)
    pairs = [(r["premise"], r["hypothesis"]) for r in rows]
    right = 0
    for i in range(0, len(pairs), 64):
        enc = _encode(
            b.tokenizer,
            pairs[i : i + 64],
            128,
            getattr(b, "inputs", None) or ("input_ids", "attention_mask", "token_type_ids"),
        )
        right += int((b(enc).argmax(-1) == np.array([LABELS.index(r["label"]) for r in rows[i : i + 64]])).sum())
    return right / len(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "snli_dev.jsonl"))
    p.add_argument("--train", type=int, default=8000, help="training pairs for the model served")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    started = time.perf_counter()
    ds = load_classification(args.data)
    names = ds.features["label"].names
    parts = ds.train_test_split(test_size=1842, seed=0)
    with tempfile.TemporaryDirectory(prefix="llmstart-bench-") as d:
        tmp = Path(d)
        for name, part in [("train", parts["train"].select(range(args.train))), ("test", parts["test"])]:
            (tmp / f"{name}.jsonl").write_text(
                "".join(
                    json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]})
                    + "\n"
                    for r in part
                )
            )
        L.seed_everything(0, verbose=False)
        data = ClassificationDataModule(
            str(tmp / "train.jsonl"), None, tokenizer=minilm_path(), labels=LABELS, batch_size=32
        )
        model = SequenceClassifier(minilm_path(), labels=LABELS, lr=1e-4)
        trainer = make_trainer(
            tmp / "run",
            max_epochs=1,
            progress_bar=False,
            logger=False,
            monitor=None,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_model_summary=False,
        )
        fit(trainer, model, data, resume=False)
        model.save_bundle(tmp / "model", data.tokenizer)
        bundle = tmp / "onnx"  # the exported bundle: ONNX float and int8 beside the PyTorch weights
        report = export_onnx(str(tmp / "model"), str(bundle), quantize=True, parity_data=str(tmp / "test.jsonl"))
        float_model, tokenizer, info = load_classifier(str(tmp / "model"))
        int8_bundle = save_int8_bundle(quantize_int8(float_model), tokenizer, tmp / "int8", read_bundle(tmp / "model"))
        rows = [json.loads(line) for line in (tmp / "test.jsonl").read_text().splitlines()]
        pairs = [(r["premise"], r["hypothesis"]) for r in rows]
        acc = {name: round(accuracy(bundle, rows, name), 4) for name in ("torch", "onnx", "onnx-int8")}
        acc["int8 bundle (torch.ao)"] = round(accuracy(int8_bundle, rows, "torch"), 4)
        print("held-out accuracy:", acc, file=sys.stderr)
        costs = where_the_time_goes(bundle, int8_bundle, pairs)
        print("per request, ms:", costs, file=sys.stderr)
        bodies = [{"premise": p, "hypothesis": h} for p, h in pairs]
        serving = {}
        with Minimal(bundle, tmp) as srv:
            serving["minimal LitServe"] = measured(srv, bodies, args.requests, args.concurrency)
        print("minimal LitServe", serving["minimal LitServe"], file=sys.stderr)
        for name, options in [
            ("llmstart serve (defaults)", {}),
            ("llmstart serve --backend torch", {"backend": "torch"}),
            ("llmstart serve --backend onnx", {"backend": "onnx"}),
            ("llmstart serve --max_batch_size 1", {"max_batch_size": 1}),
            ("llmstart serve, int8 bundle (torch.ao)", {"model": int8_bundle}),
        ]:
            with ServerProcess(options.pop("model", bundle), **options) as srv:
                backend = httpx.get(srv.url + "/info").json()["model"]["backend"]
                serving[name] = measured(srv, bodies, args.requests, args.concurrency) | {"backend": backend}
            print(name, serving[name], file=sys.stderr)
    ours, peer = serving["llmstart serve (defaults)"]["rps"], serving["minimal LitServe"]["rps"]
    batching = ours / serving["llmstart serve --max_batch_size 1"]["rps"]
    print(
        json.dumps(
            {
                "bench": "serving",
                "serving": serving,
                "llmstart_vs_minimal": round(ours / peer, 2),
                "batching_vs_unbatched": round(batching, 2),
                "accuracy": acc,
                "per_request_ms": costs,
                "parity_max_abs_diff": report["parity_max_abs_diff"],
                "goals": {"vs_minimal_1.2x": ours / peer >= 1.2, "batching_3x": batching >= 3},
                "seconds": round(time.perf_counter() - started),
            }
        )
    )


if __name__ == "__main__":
    main()
