"""Tests for eft.streaming and EFTClassifier.fit_stream (training data read as a stream)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from eft import EFTClassifier, InputError
from eft.datasets import read_labeled_file
from eft.encoder import LengthGroupedBatchSampler
from eft.streaming import (
    LabeledFileStream,
    as_row_stream,
    bp_batches,
    bp_steps_per_epoch,
    label_indices,
    scan_rows,
    shard_chunks,
)
from tests.test_classifier import LABELS, TEXTS, _config


def _write_jsonl(path, texts, labels) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for text, label in zip(texts, labels, strict=True):
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return str(path)


def _rows(n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    return [(" ".join(["w"] * int(rng.integers(1, 30))) + f" {i}", f"c{i % 3}") for i in range(n)]


def test_file_stream_reads_what_the_file_reader_reads_every_pass(tmp_path):
    path = _write_jsonl(tmp_path / "train.jsonl", TEXTS, LABELS)
    stream = LabeledFileStream(path)
    first, second = list(stream), list(stream)
    texts, labels = read_labeled_file(path)
    assert first == second == list(zip(texts, labels, strict=True))
    summary = scan_rows(stream)
    assert summary.n_rows == len(TEXTS)
    assert summary.classes.tolist() == ["neg", "pos"] and summary.counts.tolist() == [32, 32]


def test_file_stream_bad_rows_and_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\ngood one,a\n,b\nanother,b\n")
    with pytest.raises(InputError, match="line 3: empty 'text'"):
        list(LabeledFileStream(path))
    skipping = LabeledFileStream(path, bad_rows="skip")
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        summary = scan_rows(skipping)
    assert summary.n_rows == 2 and summary.classes.tolist() == ["a", "b"]
    with pytest.raises(InputError, match="column 'txt' not found.*did you mean 'text'"):
        list(LabeledFileStream(path, text_column="txt"))
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(InputError, match="no data rows"):
        scan_rows(LabeledFileStream(tmp_path / "empty.csv"))
    (tmp_path / "all_bad.csv").write_text("text,label\n,a\n,b\n")  # as read in memory
    with pytest.raises(InputError, match=r"all_bad.csv: every row is bad \(empty 'text'\)"):
        scan_rows(LabeledFileStream(tmp_path / "all_bad.csv", bad_rows="skip"))
    # JSONL lines name their own fields: a first line without a label is a bad row, as the
    # in-memory reader takes it, and a column is missing only if no line has it
    lines = [{"text": "unlabelled"}, {"text": "good one", "label": "a"}, {"text": "b", "label": 1}]
    jsonl = tmp_path / "first.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        summary = scan_rows(LabeledFileStream(jsonl, bad_rows="skip"))
    assert summary.n_rows == 2 and summary.classes.tolist() == ["1", "a"]
    with pytest.raises(InputError, match="line 1 has no 'label' field, nor has any line before"):
        list(LabeledFileStream(jsonl))
    with pytest.raises(InputError, match="column 'labels' not found.*did you mean 'label'"):
        list(LabeledFileStream(jsonl, label_column="labels", bad_rows="skip"))


def test_as_row_stream_accepts_reiterables_and_refuses_generators():
    pairs = [("a text", "x"), ("b text", "y")]
    assert list(as_row_stream(pairs)) == pairs
    dicts = [{"sentence": "a text", "y": 1}, {"sentence": "b text", "y": 0}]
    assert list(as_row_stream(dicts, "sentence", "y")) == [("a text", 1), ("b text", 0)]
    with pytest.raises(InputError, match="re-iterable"):
        as_row_stream(pair for pair in pairs)
    with pytest.raises(InputError, match="no \\['label'\\] field"):
        list(as_row_stream(dicts, "sentence"))
    with pytest.raises(InputError, match="mix types"):
        scan_rows(as_row_stream([("a", 1), ("b", "1")]))
    pairs = [(("a text", "its pair"), "x"), (["b text", "its pair"], "y")]
    assert list(as_row_stream(pairs)) == [
        (("a text", "its pair"), "x"),
        (("b text", "its pair"), "y"),
    ]
    assert (
        scan_rows(as_row_stream(pairs)).text_pairs
        and not scan_rows(as_row_stream(dicts, "sentence", "y")).text_pairs
    )
    columns = as_row_stream(dicts, "sentence", "y", text_pair_column="sentence")
    assert list(columns)[0] == (("a text", "a text"), 1)
    with pytest.raises(InputError, match="no \\['other'\\] field.*/text_pair_column"):
        list(as_row_stream(dicts, "sentence", "y", text_pair_column="other"))
    with pytest.raises(
        InputError, match="row 2 of the stream holds a text pair but row 1 a single"
    ):
        list(as_row_stream([("a text", "x"), (("a text", "its pair"), "y")]))
    with pytest.raises(InputError, match="row 1 of the stream has an empty text in its pair"):
        list(as_row_stream([(("a text", " "), "x")]))


def test_bp_batches_in_one_chunk_follow_the_in_memory_sampler():
    rows = _rows(300)
    label_of = {"c0": 0, "c1": 1, "c2": 2}

    def encode(texts):
        return [[7] * len(text.split()) for text in texts]

    lengths = [len(text.split()) for text, _ in rows]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=4, seed=5)
    for epoch in (0, 3):
        expected = [[label_of[rows[i][1]] for i in batch] for batch in sampler.batches(epoch)]
        got = bp_batches(rows, label_of, encode, epoch=epoch, seed=5, batch_size=4, chunk_rows=1000)
        assert [labels.tolist() for _, labels in got] == expected


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_bp_batches_make_equal_steps_on_every_rank(world_size):
    rows = _rows(101)
    label_of = {"c0": 0, "c1": 1, "c2": 2}
    steps = []
    for rank in range(world_size):
        batches = list(
            bp_batches(
                rows,
                label_of,
                lambda texts: [[1] for _ in texts],
                epoch=1,
                seed=0,
                batch_size=8,
                chunk_rows=20,
                rank=rank,
                world_size=world_size,
            )
        )
        steps.append(len(batches))
        assert all(1 <= len(ids) == len(labels) <= 8 for ids, labels in batches)
    assert len(set(steps)) == 1  # DDP needs the same number of steps on every rank
    assert steps[0] == bp_steps_per_epoch(101, 20, 8, world_size)


def test_bp_batches_shuffle_within_chunks_and_pad_by_repeating():
    rows = _rows(25)
    label_of = {"c0": 0, "c1": 1, "c2": 2}
    texts_seen: list[str] = []

    def encode(texts):
        texts_seen.extend(texts)
        return [[1] for _ in texts]

    for rank in range(2):
        list(
            bp_batches(
                rows,
                label_of,
                encode,
                epoch=0,
                seed=0,
                batch_size=4,
                chunk_rows=10,
                rank=rank,
                world_size=2,
            )
        )
    counts = Counter(texts_seen)
    assert set(counts) == {text for text, _ in rows}  # every row trained on
    assert sum(counts.values()) == 26  # chunks 10, 10, 5: the 5-row chunk pads one row
    assert max(counts.values()) == 2


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shard_chunks_split_rows_without_drop_or_repeat(world_size):
    rows = _rows(47)
    got: list[str] = []
    for rank in range(world_size):
        for texts, labels in shard_chunks(rows, 5, rank, world_size):
            assert len(texts) == len(labels) <= 5
            got.extend(texts)
    assert sorted(got) == sorted(text for text, _ in rows)


def test_fit_stream_equals_fit(tiny_bert_dir, tmp_path):
    """One chunk: the same batches, so the same model; small chunks: the same statistics."""
    path = _write_jsonl(tmp_path / "train.jsonl", TEXTS, LABELS)
    config = _config(tiny_bert_dir, bp_epochs=1)
    in_memory = EFTClassifier(config).fit(TEXTS, LABELS)
    streamed = EFTClassifier(config).fit_stream(path, chunk_rows=1000)
    np.testing.assert_array_equal(streamed.predict(TEXTS), in_memory.predict(TEXTS))
    for name in ("gamma_", "lambda_", "output_weights_"):
        a = getattr(in_memory.head_, name).numpy()
        b = getattr(streamed.head_, name).numpy()
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())

    probe = _config(tiny_bert_dir, bp_epochs=0)
    whole = EFTClassifier(probe).fit(TEXTS, LABELS)
    chunked = EFTClassifier(probe).fit_stream(list(zip(TEXTS, LABELS, strict=True)), chunk_rows=7)
    assert chunked.head_.n_samples_seen_ == len(TEXTS)
    a, b = whole.head_.gamma_.numpy(), chunked.head_.gamma_.numpy()
    # float32 features of differently padded batches: equal to ~1e-7, the sums in float64
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())
    np.testing.assert_array_equal(chunked.predict(TEXTS), whole.predict(TEXTS))


def test_fit_stream_of_text_pairs_equals_fit(tiny_bert_dir, tmp_path):
    from tests.test_classifier import PAIR_LABELS, PAIR_TEXTS

    path = tmp_path / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for (a, b), label in zip(PAIR_TEXTS * 4, PAIR_LABELS * 4, strict=True):
            handle.write(json.dumps({"premise": a, "hypothesis": b, "label": label}) + "\n")
    stream = LabeledFileStream(path, "premise", text_pair_column="hypothesis")
    assert list(stream)[:8] == list(zip(PAIR_TEXTS, PAIR_LABELS, strict=True))
    config = _config(tiny_bert_dir, bp_epochs=1)
    in_memory = EFTClassifier(config).fit(PAIR_TEXTS * 4, PAIR_LABELS * 4)
    streamed = EFTClassifier(config).fit_stream(
        path, text_column="premise", text_pair_column="hypothesis", chunk_rows=1000
    )
    assert streamed.text_pairs_ and streamed.model_.encoder.pair_separator_id is not None
    np.testing.assert_allclose(
        streamed.decision_function(PAIR_TEXTS),
        in_memory.decision_function(PAIR_TEXTS),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(InputError, match="both be text pairs or both single texts"):
        EFTClassifier(config).fit_stream(
            path, TEXTS, LABELS, text_column="premise", text_pair_column="hypothesis"
        )


def test_fused_fraction_below_one_is_refused_for_a_stream(tiny_bert_dir, tmp_path):
    path = _write_jsonl(tmp_path / "train.jsonl", TEXTS, LABELS)
    config = _config(tiny_bert_dir, bp_epochs=1, elm_from_last_epoch=True, fused_fraction=0.5)
    with pytest.raises(InputError, match="needs the training data in memory"):
        EFTClassifier(config).fit_stream(path, chunk_rows=10)


def test_fit_stream_holds_at_most_a_chunk_of_texts(tiny_bert_dir, monkeypatch):
    import eft.classifier

    batch_sizes: list[int] = []
    real = eft.classifier.tokenize

    def spy(tokenizer, texts, max_length):
        batch_sizes.append(len(texts))
        return real(tokenizer, texts, max_length)

    monkeypatch.setattr(eft.classifier, "tokenize", spy)
    rows = list(zip(TEXTS, LABELS, strict=True))
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=2, n_iter=2)).fit_stream(
        rows, chunk_rows=10
    )
    assert max(batch_sizes) == 10
    # 2 BP epochs + the feedforward pass + the passes of the Eq. 8-9 iteration: no feature
    # cache is kept for a stream (it would hold every feature row in memory)
    assert sum(batch_sizes) >= 4 * len(TEXTS)
    assert clf.score(TEXTS, LABELS) > 0.5


def test_multi_label_streams_read_label_sets_and_refuse_mixed_rows(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("text,label\nfirst text,a|b\nsecond text,\nthird text,b\n")
    rows = list(LabeledFileStream(path, label_separator="|"))
    assert rows == [("first text", ("a", "b")), ("second text", ()), ("third text", ("b",))]
    summary = scan_rows(rows)
    assert summary.multi_label and summary.n_rows == 3
    assert summary.classes.tolist() == ["a", "b"] and summary.counts.tolist() == [1, 2]
    objects = as_row_stream([("x", ["b", "a", "b"]), ("y", {"c"}), ("z", np.array(["a"]))])
    assert list(objects) == [("x", ("b", "a")), ("y", ("c",)), ("z", ("a",))]
    with pytest.raises(
        InputError, match="row 2 of the stream holds a single label but row 1 a set"
    ):
        scan_rows(as_row_stream([("x", ["a"]), ("y", "a")]))
    with pytest.raises(InputError, match="row 2 of the stream holds a set of labels but row 1 a"):
        scan_rows(as_row_stream([("x", "a"), ("y", ["a"])]))
    with pytest.raises(InputError, match="JSON list, not a single label"):
        list(LabeledFileStream(_write_jsonl(tmp_path / "t.jsonl", ["x"], [["a"]])))
    with pytest.raises(InputError, match="label_separator must be a non-empty string"):
        LabeledFileStream(path, label_separator="")


def test_multi_label_bp_batches_and_feature_labels_are_0_1_rows():
    label_of = {"a": 0, "b": 1, "c": 2}
    rows = label_indices([("a", "c"), (), ("b",)], label_of, multi_label=True)
    np.testing.assert_array_equal(rows, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    with pytest.raises(InputError, match="label 'd' was not in the stream's first pass"):
        label_indices([("d",)], label_of, multi_label=True)
    data = [(f"text {i}", ("a", "b") if i % 2 else ("c",)) for i in range(10)]
    batches = list(
        bp_batches(
            data,
            label_of,
            lambda texts: [[1] * len(t) for t in texts],
            epoch=0,
            seed=0,
            batch_size=4,
            chunk_rows=10,
            multi_label=True,
        )
    )
    labels = np.concatenate([y for _, y in batches])
    assert labels.shape == (10, 3) and sorted(labels.sum(1).tolist()) == [1] * 5 + [2] * 5


@pytest.mark.filterwarnings("ignore:The sigmoid temperature fitted on 20")  # tiny data
def test_fit_stream_of_label_sets_equals_fit(tiny_bert_dir, tmp_path):
    from tests.test_classifier import _multi_label_config, _multi_label_data

    texts, labels = _multi_label_data()
    config = _multi_label_config(tiny_bert_dir, bp_epochs=1)
    in_memory = EFTClassifier(config).fit(texts, labels, texts[:20], labels[:20])
    rows = list(zip(texts, labels, strict=True))
    streamed = EFTClassifier(config).fit_stream(rows, texts[:20], labels[:20], chunk_rows=1000)
    assert streamed.multi_label_ and streamed.classes_.tolist() == in_memory.classes_.tolist()
    np.testing.assert_allclose(
        streamed.decision_function(texts), in_memory.decision_function(texts), atol=1e-5
    )
    np.testing.assert_array_equal(streamed.predict(texts), in_memory.predict(texts))
    path = tmp_path / "tags.csv"
    path.write_text("text,label\n" + "".join(f'"{t}",{"|".join(y)}\n' for t, y in rows))
    from_file = EFTClassifier(config).fit_stream(path, label_separator="|", chunk_rows=7)
    assert from_file.multi_label_ and from_file.head_.n_samples_seen_ == len(texts)
    assert from_file.score(texts, labels) > 0.5
