"""The data layer on real data and on bad input (issue: foundation / data layer)."""

import json
import os
import time
from collections import Counter
from unittest import mock

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

from llmstart import data as D


# --- real data -------------------------------------------------------------------------------------------------


def test_snli_dev_counts(shared):
    ds = D.load_classification(shared("snli_dev.jsonl"))
    assert ds.num_rows == 9842
    names = D.label_names(ds)
    assert names == ["entailment", "neutral", "contradiction"]
    counts = Counter(names[i] for i in ds["label"])
    assert counts == {"entailment": 3329, "neutral": 3235, "contradiction": 3278}
    assert D.text_columns_of(ds) == ["premise", "hypothesis"]


def test_packing_wikitext_gives_the_implied_number_of_blocks(shared, minilm_tokenizer):
    path, block = shared("wikitext2_valid.txt"), 128
    corpus = D.load_corpus(path)
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    assert corpus.num_rows == len(lines)
    # the token count, computed independently: every non-blank line, plus one [SEP] after each
    ids = [minilm_tokenizer(l, add_special_tokens=False)["input_ids"] for l in lines]
    stream = [t for x in ids for t in x + [minilm_tokenizer.sep_token_id]]
    blocks = D.pack_blocks(corpus, minilm_tokenizer, block)
    assert len(stream) > 200_000
    assert blocks.num_rows == len(stream) // block
    packed = np.asarray(blocks.with_format("numpy")["input_ids"])
    assert packed.shape == (len(stream) // block, block)
    assert packed.ravel().tolist() == stream[: packed.size]  # nothing lost or reordered between map batches


def _padding_per_epoch(dm) -> tuple[int, int]:
    "Real and padding tokens in one epoch of the data module's training batches, counted on the collated tensors."
    real = pad = 0
    for batch in dm.train_dataloader():
        mask = batch["attention_mask"]
        real += int(mask.sum())
        pad += int((mask == 0).sum())
    return real, pad


def test_length_grouping_halves_padding_on_snli(shared, minilm_tokenizer):
    snli = str(shared("snli_dev.jsonl"))
    kw = dict(tokenizer=minilm_tokenizer, batch_size=32, val_fraction=0.1, seed=0)
    torch.manual_seed(0)
    grouped = D.ClassificationDataModule(snli, group_by_length=True, **kw)
    grouped.setup()
    plain = D.ClassificationDataModule(snli, group_by_length=False, **kw)
    plain.setup()
    real_g, pad_g = _padding_per_epoch(grouped)
    real_r, pad_r = _padding_per_epoch(plain)
    assert real_g == real_r > 200_000  # the same examples, every one once
    assert pad_g <= 0.5 * pad_r, (pad_g, pad_r)
    # the measured effect is far larger than the bar: report it
    print(f"padding per epoch: random {pad_r:,}, length-grouped {pad_g:,} ({1 - pad_g / pad_r:.0%} less)")


# --- length-grouped sampling -----------------------------------------------------------------------------------


def test_length_grouped_batches_cover_every_example_and_reshuffle():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=1000)
    sampler = D.LengthGroupedBatchSampler(RandomSampler(range(1000)), 16, lengths=lengths, mega_batch=8)
    e1, e2 = list(sampler), list(sampler)
    for epoch in (e1, e2):
        assert sorted(i for b in epoch for i in b) == list(range(1000))
        assert len(epoch) == 63 and all(len(b) <= 16 for b in epoch)
    assert e1 != e2
    stats = D.padding_stats(lengths, e1)
    assert (
        stats["padding_fraction"]
        < D.padding_stats(lengths, list(BatchSampler(RandomSampler(range(1000)), 16, False)))["padding_fraction"]
    )


def test_length_grouped_batches_under_ddp_shard_the_data():
    lengths = np.arange(100) % 17 + 1
    shards = [
        list(
            D.LengthGroupedBatchSampler(
                DistributedSampler(range(100), num_replicas=2, rank=r, seed=0), 8, lengths=lengths
            )
        )
        for r in (0, 1)
    ]
    seen = [i for s in shards for b in s for i in b]
    assert sorted(seen) == list(range(100)) and len(shards[0]) == len(shards[1])


def test_evaluation_batches_are_sorted_and_deterministic():
    lengths = [5, 1, 9, 3, 7]
    s = D.LengthGroupedBatchSampler(range(5), 2, lengths=lengths, shuffle=False)
    assert list(s) == [[2, 4], [0, 3], [1]] == list(s)


# --- bad input ---------------------------------------------------------------------------------------------------

GOOD = {"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": "contradiction"}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "row, message",
    [
        ({"premise": "A man sleeps.", "hypothesis": "A man rests."}, "line 2: label is missing"),
        (
            {**GOOD, "label": "maybe"},
            "line 2: unknown label 'maybe' (expected one of entailment, neutral, contradiction)",
        ),
        ({**GOOD, "label": ""}, "line 2: label is missing"),
        ({**GOOD, "premise": "   "}, "line 2: premise is empty"),
        ({**GOOD, "hypothesis": None}, "line 2: hypothesis is missing"),
        ({**GOOD, "label": 7}, "line 2: label 7 is out of range for the 3 labels"),
        ({**GOOD, "label": 1.5}, "line 2: label must be a string or an integer"),
        ('{"premise": "A man sleeps.", "label": ', "line 2: broken JSON"),
        ('["not", "an", "object"]', "line 2: not a JSON object"),
    ],
)
def test_bad_rows_raise_naming_file_and_line(tmp_path, row, message):
    f = write_jsonl(tmp_path / "train.jsonl", [GOOD, row, GOOD])
    with pytest.raises(D.DataError) as e:
        D.load_classification(f, labels=D.NLI_LABELS)
    assert str(e.value).startswith(f"{f}, {message}"), str(e.value)
    assert "skip_bad" in str(e.value)


def test_skip_bad_counts_and_reports(tmp_path):
    rows = [GOOD, {**GOOD, "label": None}, '{"broken', {**GOOD, "premise": ""}, GOOD, {**GOOD, "label": "nope"}, GOOD]
    f = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.warns(D.SkippedRowsWarning) as caught:
        ds = D.load_classification(f, labels=D.NLI_LABELS, skip_bad=True)
    assert ds.num_rows == 3
    report = caught[0].message.report
    assert report.count == 4 and report.total == 7
    assert sorted(l for ls in report.lines.values() for l in ls) == [2, 3, 4, 6]
    assert "skipped 4 of 7 rows" in str(caught[0].message)


def test_csv_and_tsv_bad_rows(tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text('text,label\n"a ""quoted"" text\nacross lines",pos\njust one field\n,neg\ngood,neg\n')
    with pytest.raises(D.DataError, match=r"reviews.csv, line 4: expected 2 fields"):
        D.load_classification(f)
    with pytest.warns(D.SkippedRowsWarning) as caught:
        ds = D.load_classification(f, skip_bad=True)
    assert ds["text"] == ['a "quoted" text\nacross lines', "good"]
    assert caught[0].message.report.lines == {"expected 2 fields (text, label), got 1": [4], "text is empty": [5]}
    t = tmp_path / "r.tsv"
    t.write_text("text\tlabel\nfine\t1\nbad\t\n")
    with pytest.raises(D.DataError, match=r"r.tsv, line 3: label is missing"):
        D.load_classification(t)


def test_a_spreadsheets_csv_with_a_byte_order_mark_and_windows_line_endings_reads_like_any_other(tmp_path):
    rows = [("A man plays.", "A man is playing.", "entailment"), ("A dog runs.", "A cat sleeps.", "contradiction")]
    plain = tmp_path / "plain.csv"
    plain.write_text("premise,hypothesis,label\n" + "".join(f"{a},{b},{l}\n" for a, b, l in rows), encoding="utf-8")
    excel = tmp_path / "excel.csv"  # what "CSV UTF-8" in a spreadsheet saves: a BOM, then CRLF line endings
    excel.write_bytes(b"\xef\xbb\xbf" + plain.read_text().replace("\n", "\r\n").encode())
    a, b = D.load_classification(plain), D.load_classification(excel)
    assert b.column_names == a.column_names == ["premise", "hypothesis", "label"]
    assert b["premise"] == a["premise"] and b["label"] == a["label"]
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"\xef\xbb\xbfFirst line.\r\nSecond line.\r\n")
    assert D.load_corpus(text)["text"] == ["First line.", "Second line."]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"text": "good", "label": "pos"}\r\n{"text": "bad", "label": "neg"}\r\n')
    assert D.load_classification(jsonl)["text"] == ["good", "bad"]


def test_validation_labels_must_match_training(tmp_path, minilm_tokenizer):
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": t, "label": l} for t, l in [("great", "pos"), ("awful", "neg"), ("fine", "pos"), ("bad", "neg")]],
    )
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "ok", "label": "pos"}, {"text": "so-so", "label": "mixed"}])
    dm = D.ClassificationDataModule(str(train), str(val), tokenizer=minilm_tokenizer)
    with pytest.raises(D.DataError, match=r"val.jsonl, line 2: unknown label 'mixed' \(expected one of neg, pos\)"):
        dm.setup()


def test_missing_file_and_unknown_schema(tmp_path):
    with pytest.raises(D.DataError, match="no such file"):
        D.load_classification(tmp_path / "nope.jsonl")
    f = write_jsonl(tmp_path / "x.jsonl", [{"body": "hello", "label": "a"}])
    with pytest.raises(D.DataError, match="text_columns"):
        D.load_classification(f)
    assert D.load_classification(f, text_columns=["body"])["body"] == ["hello"]


def test_hub_id_offline_fails_fast_with_a_way_out():
    t0 = time.perf_counter()
    with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}):
        with pytest.raises(D.DataError, match="Use a local file instead"):
            D.load_classification("stanfordnlp/snli", split="validation")
    assert time.perf_counter() - t0 < 5


def test_hub_unreachable_without_offline_env_fails_fast():
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    with mock.patch.dict(os.environ, env, clear=True), mock.patch.object(D, "hub_reachable", return_value=False):
        with pytest.raises(D.DataError, match="the hub cannot be reached"):
            D.load_corpus("Salesforce/wikitext", name="wikitext-2-raw-v1")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "train_file,val_file,val_split,want",
    [
        ("stanfordnlp/snli", None, None, [("stanfordnlp/snli", "train"), ("stanfordnlp/snli", "validation")]),
        (
            "stanfordnlp/snli:train[:50]",
            None,
            None,
            [("stanfordnlp/snli", "train[:50]"), ("stanfordnlp/snli", "validation")],
        ),
        (
            "stanfordnlp/snli:validation",
            "stanfordnlp/snli:test",
            None,
            [("stanfordnlp/snli", "validation"), ("stanfordnlp/snli", "test")],
        ),
        ("stanfordnlp/snli", "stanfordnlp/snli", "test", [("stanfordnlp/snli", "train"), ("stanfordnlp/snli", "test")]),
    ],
)
def test_hub_splits_named_in_the_id_are_the_splits_read(train_file, val_file, val_split, want, minilm_tokenizer):
    "`id:split` names the split to read; validation comes from the same data set's validation split, never its train split."
    feats = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(D.NLI_LABELS)),
        }
    )
    hub = datasets.Dataset.from_dict(
        {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 1, 2]}, features=feats
    )
    read = []
    with mock.patch.object(
        D, "load_hub", side_effect=lambda repo, name=None, split=None: read.append((repo, split)) or hub
    ):
        D.ClassificationDataModule(train_file, val_file, tokenizer=minilm_tokenizer, val_split=val_split).setup()
        assert read == want
        with pytest.raises(D.UsageError, match="names split 'test' but split='validation'"):
            D.ClassificationDataModule("x/y", "x/y:test", tokenizer=minilm_tokenizer, val_split="validation").setup()


def test_hub_unlabelled_rows_are_dropped_and_reported():
    feats = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(D.NLI_LABELS)),
        }
    )
    hub = datasets.Dataset.from_dict(
        {"premise": ["a", "b", "c", "d"], "hypothesis": ["w", "x", "y", "z"], "label": [0, -1, 2, -1]}, features=feats
    )
    with mock.patch.object(D, "load_hub", return_value=hub), pytest.warns(D.SkippedRowsWarning) as caught:
        ds = D.load_classification("stanfordnlp/snli", split="train")
    assert ds["premise"] == ["a", "c"] and D.label_names(ds) == list(D.NLI_LABELS)
    assert caught[0].message.report.lines == {"unlabelled (label -1, dropped)": [2, 4]}


@pytest.fixture
def data_mirror(shared, tmp_path, monkeypatch):
    """A stand-in for the shared data files' pinned sources: a local folder served over HTTP under the same paths,
    with no shared data folder, an empty cache and the network allowed; yields (folder, cache, the real files' bytes)."""
    import functools
    import http.server
    import threading

    real = {name: shared(name).read_bytes() for name in ("tinyshakespeare.txt", "wikitext2_valid.txt")}
    root = tmp_path / "mirror"
    root.mkdir()
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for k, v in {
        "LLMSTART_DATA_DIR": str(tmp_path / "no-shared-data"),
        "LLMSTART_CACHE": str(tmp_path / "cache-root"),
        "LLMSTART_DATA_MIRROR": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(D, "_TOLD", set())
    yield root, D.data_cache(), real
    server.shutdown()


def _mirror_put(root, url: str, data: bytes):
    path = root / url.removeprefix("https://raw.githubusercontent.com/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_shared_file_downloads_its_pinned_source_once_and_checks_it(data_mirror, capsys):
    root, cache, files = data_mirror
    real = files["tinyshakespeare.txt"]
    (url,) = D.SHARED_DATA["tinyshakespeare.txt"].sources
    _mirror_put(root, url, real)
    path = D.shared_file("tinyshakespeare.txt")
    assert path == cache / "tinyshakespeare.txt" and path.read_bytes() == real
    assert "downloaded from its pinned source (SHA-256 checked)" in capsys.readouterr().out
    _mirror_put(root, url, b"changed")  # the cached copy is used, and it is still the checked one
    assert D.shared_file("tinyshakespeare.txt").read_bytes() == real
    assert f"Tiny Shakespeare, the copy downloaded earlier ({path})" in capsys.readouterr().out


def test_shared_file_says_it_used_the_shared_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:")
    monkeypatch.setenv("LLMSTART_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(D, "_TOLD", set())
    assert D.shared_file("tinyshakespeare.txt") == tmp_path / "tinyshakespeare.txt"
    assert D.shared_file("tinyshakespeare.txt") == tmp_path / "tinyshakespeare.txt"
    said = capsys.readouterr().out
    assert said.count("Tiny Shakespeare, the shared data folder's copy") == 1, said  # once a session


def test_shared_file_refuses_a_download_that_is_not_the_pinned_file(data_mirror):
    root, cache, files = data_mirror
    (url,) = D.SHARED_DATA["wikitext2_valid.txt"].sources
    _mirror_put(root, url, files["wikitext2_valid.txt"][:-100])  # a truncated transfer
    with pytest.raises(D.DataError, match="not the pinned"):
        D.shared_file("wikitext2_valid.txt")
    assert not (cache / "wikitext2_valid.txt").exists()


def test_a_failed_download_is_a_clear_error_and_saves_nothing(data_mirror):
    root, cache, _ = data_mirror  # the mirror holds nothing: every source answers 404
    with pytest.raises(
        D.DataError, match=r"could not download http://127\.0\.0\.1:\d+/karpathy/char-rnn/.*404.*LLMSTART_DATA_DIR"
    ):
        D.shared_file("tinyshakespeare.txt")
    assert not cache.exists() or not list(cache.iterdir())


def test_snli_dev_is_rebuilt_from_esnli_exactly(shared):
    "The SNLI file is built from e-SNLI's three files; rebuilt from the same lines (e-SNLI pads them), it is the same file."
    rows = [json.loads(l) for l in shared("snli_dev.jsonl").read_text().splitlines()]
    parts = [("".join(r[k] + " \n" for r in rows)).encode() for k in ("premise", "hypothesis", "label")]
    built = D._esnli_pairs(parts)
    assert built == shared("snli_dev.jsonl").read_bytes()
    assert D._sha256(built) == D.SHARED_DATA["snli_dev.jsonl"].sha256


def test_offline_shared_file_is_none_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMSTART_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("LLMSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(D, "_TOLD", set())
    assert D.shared_file("snli_dev.jsonl") is None
    assert "offline mode is on" in capsys.readouterr().out
    assert D.shared_file("no_such_file.txt") is None


# --- samples, corpora and data modules ---------------------------------------------------------------------------


def test_bundled_nli_sample_is_reproducible_and_balanced(tmp_path):
    for path in D.write_synthetic_nli(tmp_path):
        name = next(k for k, v in D.SAMPLES.items() if v == path.name)
        assert path.read_text() == D.sample_path(name).read_text()
    train, val = D.load_classification("sample:nli-train"), D.load_classification("sample:nli-val")
    assert (train.num_rows, val.num_rows) == (2000, 500)
    assert sorted(Counter(train["label"]).values()) == [666, 667, 667]
    pairs = lambda ds: set(zip(ds["premise"], ds["hypothesis"]))
    assert not pairs(train) & pairs(val)


def test_corpus_modes_and_split(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("one two\nthree\n\nfour five\n\n\nsix\n")
    assert D.load_corpus(f)["text"] == ["one two", "three", "four five", "six"]
    assert D.load_corpus(f, by="paragraph")["text"] == ["one two\nthree", "four five", "six"]
    whole = D.load_corpus(f, by="file")
    train, val = D.split_documents(whole, 0.25)
    assert train[0]["text"] + val[0]["text"] == whole[0]["text"]
    with pytest.raises(D.DataError, match="no text"):
        (tmp_path / "empty.txt").write_text("\n\n")
        D.load_corpus(tmp_path / "empty.txt")


def test_language_modeling_datamodule_on_tiny_shakespeare(shared, minilm_tokenizer):
    dm = D.LanguageModelingDataModule(
        str(shared("tinyshakespeare.txt")),
        tokenizer=minilm_tokenizer,
        by="file",
        block_size=64,
        batch_size=4,
        val_fraction=0.1,
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 64) and torch.equal(batch["labels"], batch["input_ids"])
    # the nanoGPT split: the validation blocks come from the last 10 % of the text
    ratio = len(dm.val_ds) / (len(dm.train_ds) + len(dm.val_ds))
    assert 0.08 < ratio < 0.12


def test_classification_datamodule_splits_stratified_and_reproducibly(minilm_tokenizer):
    kw = dict(tokenizer=minilm_tokenizer, val_fraction=0.2, seed=3)
    a = D.ClassificationDataModule("sample:nli-train", **kw)
    a.setup()
    b = D.ClassificationDataModule("sample:nli-train", **kw)
    b.setup()
    assert a.val_ds["input_ids"] == b.val_ds["input_ids"] and len(a.val_ds) == 400
    assert sorted(Counter(a.val_ds["label"]).values()) == [133, 133, 134]
    assert a.num_labels == 3 and a.text_columns == ["premise", "hypothesis"]
