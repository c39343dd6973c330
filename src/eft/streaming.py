"""Training data read as a stream, for datasets larger than memory.

A *row stream* is re-iterable: every ``iter()`` starts the source over and yields
``(text, label)`` rows, where a text is a string or, for sentence-pair tasks, a
``(text, text_pair)`` tuple (``text_pair_column`` of a file or of dict rows), and a label is
one label or, for multi-label tasks, a tuple of labels (a list, tuple or set in the rows; a
file's JSON lists or cells split on ``label_separator``).
:class:`LabeledFileStream` reads a CSV/TSV/JSONL file (optionally gzipped) lazily;
:func:`as_row_stream` also accepts a list of rows or of dicts, or any object whose
``__iter__`` starts over (e.g. a Hugging Face ``datasets.IterableDataset`` from
``load_dataset(..., streaming=True)``, whose rows are dicts).

:meth:`eft.EFTClassifier.fit_stream` reads the stream ``bp_epochs + 2`` times (one pass that
checks the rows and collects the classes, one per BP epoch, one feedforward pass; plus one
per extra I-ELM iteration), holding at most ``chunk_rows`` texts and their token ids at a
time. The BP stage shuffles within each chunk (as a shuffle buffer does), so a file sorted by
label must be shuffled once beforehand, or read with ``chunk_rows`` larger than it. The
I-ELM statistics are sums over rows, so the head is the in-memory one up to summation order.

Under ``torchrun``, every rank reads the stream; row ``g`` belongs to rank ``g % world_size``
in the feedforward pass (no row dropped or repeated), and in a BP chunk the ranks split a
shared permutation, the last rank(s) repeating a row or so, as ``DistributedSampler`` pads,
so that every rank runs the same number of steps.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eft.datasets import (
    _TABLE_KINDS,
    _file_kind,
    _iter_records,
    _label_set,
    _label_str,
    _require_column,
    _row_problem,
    _Table,
)
from eft.encoder import is_text_pair
from eft.errors import InputError
from eft.metrics import is_label_set


class LabeledFileStream:
    """``(text, label)`` rows of a ``.csv``/``.tsv``/``.jsonl`` file (``.gz`` too), read lazily.

    Bad rows (empty text, missing label, wrong number of fields) raise :class:`InputError`
    naming the line with ``bad_rows="error"``, and are skipped with ``bad_rows="skip"``
    (:func:`scan_rows` counts them and warns once). With ``label_separator`` the file is
    multi-label: each label is the tuple of a JSON list's labels or of the cell split on the
    separator (as :func:`eft.datasets.read_labeled_file` reads it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        text_column: str = "text",
        label_column: str = "label",
        bad_rows: str = "error",
        text_pair_column: str | None = None,
        label_separator: str | None = None,
    ) -> None:
        if label_separator is not None and not label_separator:
            raise InputError("label_separator must be a non-empty string, e.g. ',' or '|'.")
        self.path = Path(path)
        self.text_column = text_column
        self.label_column = label_column
        self.bad_rows = bad_rows
        self.text_pair_column = text_pair_column
        self.label_separator = label_separator

    def __repr__(self) -> str:
        return f"LabeledFileStream({str(self.path)!r})"

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        pair_column = self.text_pair_column or ""
        separator = self.label_separator
        if self.bad_rows not in ("error", "skip"):
            raise InputError(f"bad_rows must be 'error' or 'skip', not {self.bad_rows!r}")
        columns: list[str] = []
        required = {self.text_column: "text_column", self.label_column: "label_column"}
        if pair_column:
            required[pair_column] = "text_pair_column"
        # a CSV/TSV header names every column; JSONL lines name their own fields, so a
        # column is missing only if no line has it (a line without it is a bad row)
        jsonl = _file_kind(self.path, _TABLE_KINDS) == "jsonl"
        checked = False
        self.skipped_ = kept = 0
        last_problem = ""
        for line_no, record in _iter_records(self.path, columns_out=columns):
            if not checked and not jsonl:
                for column, option in required.items():
                    _require_column(_Table(self.path, columns, []), column, option)
            checked = True
            problem = _row_problem(
                record, self.text_column, self.label_column, pair_column, separator is not None
            )
            if problem:
                if self.bad_rows == "error":
                    never = [c for c in required if c not in columns]
                    if jsonl and never:  # no line so far had it: a misspelled column?
                        try:
                            _require_column(_Table(self.path, columns, []), never[0], "")
                        except InputError as error:
                            raise InputError(
                                f"{self.path.name}: line {line_no} has no '{never[0]}' field, "
                                f"nor has any line before it ({error}); fix the column name "
                                f"({required[never[0]]}) or the row, or skip bad rows with "
                                f"bad_rows='skip' (--bad-rows skip)"
                            ) from None
                    raise InputError(
                        f"{self.path.name}: line {line_no}: {problem}; fix or remove the row, "
                        f"or skip bad rows with bad_rows='skip' (--bad-rows skip)"
                    )
                self.skipped_ += 1
                last_problem = problem
                continue
            text = record[self.text_column]
            value = record[self.label_column]
            label = _label_str(value) if separator is None else _label_set(value, separator)
            kept += 1
            yield ((text, record[pair_column]) if pair_column else text), label
        if not checked:
            raise InputError(f"{self.path} has no data rows; add some examples")
        for column, option in required.items():  # JSONL: on no line at all
            _require_column(_Table(self.path, columns, []), column, option)
        if not kept:  # every row skipped: said as in memory
            raise InputError(
                f"{self.path.name}: every row is bad ({last_problem}); nothing to read"
            )


class _IterableRows:
    """Rows of a re-iterable source of pairs or dicts, as ``(text, label)``."""

    def __init__(
        self,
        source: Iterable[Any],
        text_column: str,
        label_column: str,
        text_pair_column: str | None = None,
    ) -> None:
        self.source = source
        self.text_column = text_column
        self.label_column = label_column
        self.text_pair_column = text_pair_column

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        columns = [self.text_column, self.label_column]
        if self.text_pair_column:
            columns.insert(1, self.text_pair_column)
        first_kind = None
        for number, row in enumerate(self.source, 1):
            if isinstance(row, dict):
                missing = [c for c in columns if c not in row]
                if missing:
                    raise InputError(
                        f"row {number} of the stream has no {missing} field; its fields are "
                        f"{sorted(row)[:10]} (choose them with text_column/label_column"
                        + ("/text_pair_column)" if self.text_pair_column else ")")
                    )
                text, label = row[self.text_column], row[self.label_column]
                if self.text_pair_column:
                    text = (text, row[self.text_pair_column])
            else:
                try:
                    text, label = row
                except (TypeError, ValueError):
                    raise InputError(
                        f"row {number} of the stream is {type(row).__name__}; a stream yields "
                        "(text, label) pairs or dicts with the text and label columns"
                    ) from None
            if is_text_pair(text):
                text = tuple(text)
                if not all(part.strip() for part in text):
                    raise InputError(f"row {number} of the stream has an empty text in its pair")
            elif not isinstance(text, str) or not text.strip():
                raise InputError(
                    f"row {number} of the stream has an empty or non-string text (a text is a "
                    "string or a (text, text_pair) tuple of two)"
                )
            kind = isinstance(text, tuple)
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind:
                raise InputError(
                    f"row {number} of the stream holds "
                    + ("a text pair" if kind else "a single text")
                    + " but row 1 "
                    + ("a single text" if kind else "a text pair")
                    + "; every row must be one kind"
                )
            if label is None:
                raise InputError(f"row {number} of the stream has no label")
            if is_label_set(label):  # multi-label: a tuple (scan_rows checks every row is one)
                values = label.tolist() if isinstance(label, np.ndarray) else label
                label = tuple(dict.fromkeys(values))
            yield text, label


def as_row_stream(
    source: Any,
    text_column: str = "text",
    label_column: str = "label",
    bad_rows: str = "error",
    text_pair_column: str | None = None,
    label_separator: str | None = None,
) -> Iterable[tuple[Any, Any]]:
    """A path becomes a :class:`LabeledFileStream`; a re-iterable of ``(text, label)`` rows
    or dicts is wrapped. A one-shot iterator (a generator) is refused: the stream is read
    several times. ``text_pair_column`` makes every text a pair (of a file's or dict's
    columns); tuple rows may hold ``((text, text_pair), label)`` as they are.
    ``label_separator`` makes a file multi-label; rows of objects are multi-label when their
    labels are lists, tuples or sets."""
    if isinstance(source, (str, os.PathLike)):
        return LabeledFileStream(
            source, text_column, label_column, bad_rows, text_pair_column, label_separator
        )
    if isinstance(source, LabeledFileStream):
        return source
    if not isinstance(source, Iterable) or iter(source) is source:
        raise InputError(
            "a training stream must be re-iterable, as it is read once per epoch: pass a file "
            "path, a list, or an object whose __iter__ starts over (e.g. a datasets."
            "IterableDataset), not a generator"
        )
    return _IterableRows(source, text_column, label_column, text_pair_column)


@dataclass
class StreamSummary:
    """What one pass over a stream found: its size and classes (sorted) with their counts
    (multi-label: the rows holding each label), whether its texts are ``(text, text_pair)``
    pairs, and whether its labels are label sets (multi-label)."""

    n_rows: int
    classes: np.ndarray
    counts: np.ndarray
    text_pairs: bool = False
    multi_label: bool = False


def scan_rows(rows: Iterable[tuple[str, Any]]) -> StreamSummary:
    """One pass: count the rows and collect the classes (checks every row on the way)."""
    counts: Counter[Any] = Counter()
    text_pairs = multi_label = False
    n_rows = 0
    for text, label in rows:
        n_rows += 1
        is_set = isinstance(label, tuple)
        if n_rows == 1:
            text_pairs, multi_label = isinstance(text, tuple), is_set
        elif is_set != multi_label:
            kinds = ("a set of labels", "a single label")
            raise InputError(
                f"row {n_rows} of the stream holds {kinds[not is_set]} but row 1 "
                f"{kinds[is_set]}; every row must be one kind (multi-label: a list of labels "
                "per row, [] for none)"
            )
        if is_set:
            counts.update(label)
        else:
            counts[label] += 1
    if not n_rows:
        raise InputError("the training stream holds no rows")
    skipped = getattr(rows, "skipped_", 0)
    if skipped:
        warnings.warn(
            f"{getattr(rows, 'path', 'the stream')}: skipped {skipped} bad row(s)",
            UserWarning,
            stacklevel=3,
        )
    try:
        classes = sorted(counts)
    except TypeError:
        kinds = sorted({type(label).__name__ for label in counts})
        raise InputError(
            f"the stream's labels mix types ({', '.join(kinds)}); make them all strings or all "
            "integers"
        ) from None
    return StreamSummary(
        n_rows=n_rows,
        classes=np.asarray(classes),
        counts=np.asarray([counts[c] for c in classes], dtype=np.int64),
        text_pairs=text_pairs,
        multi_label=multi_label,
    )


def chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bp_steps_per_epoch(n_rows: int, chunk_rows: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps one rank makes in one BP epoch over a stream of ``n_rows`` rows."""
    full, rest = divmod(n_rows, chunk_rows)
    per_chunk = [chunk_rows] * full + ([rest] if rest else [])
    return sum(math.ceil(math.ceil(n / world_size) / batch_size) for n in per_chunk)


def bp_batches(
    rows: Iterable[tuple[str, Any]],
    label_of: dict[Any, int],
    encode: Any,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    chunk_rows: int,
    rank: int = 0,
    world_size: int = 1,
    multi_label: bool = False,
) -> Iterator[tuple[list[list[int]], np.ndarray]]:
    """This rank's shuffled, length-grouped training batches ``(token ids, label indices)``
    (multi-label: a 0/1 row per text, :func:`label_indices`).

    Per chunk of ``chunk_rows`` rows: a permutation drawn from ``default_rng(seed + epoch)``
    (the same on every rank), this rank's share of it (padded to the longest share), groups
    of ``50 * batch_size`` sorted by length, cut into batches, batches shuffled. With one
    chunk and one rank this is exactly :class:`eft.encoder.LengthGroupedBatchSampler`'s order.
    ``encode(texts)`` returns token id lists.
    """
    rng = np.random.default_rng(seed + epoch)
    for chunk in chunks(rows, chunk_rows):
        order = rng.permutation(len(chunk))
        share = order[rank::world_size]
        per_rank = math.ceil(len(chunk) / world_size)
        if len(share) < per_rank:  # as DistributedSampler pads: repeat the chunk's first rows
            share = np.concatenate([share, order[: per_rank - len(share)]])
        ids = encode([chunk[i][0] for i in share])
        labels = label_indices([chunk[i][1] for i in share], label_of, multi_label)
        lengths = np.asarray([len(x) for x in ids])
        batches: list[np.ndarray] = []
        group = 50 * batch_size
        for start in range(0, len(ids), group):
            positions = np.arange(start, min(start + group, len(ids)))
            positions = positions[np.argsort(-lengths[positions], kind="stable")]
            batches.extend(
                positions[i : i + batch_size] for i in range(0, len(positions), batch_size)
            )
        for b in rng.permutation(len(batches)):
            yield [ids[i] for i in batches[b]], labels[batches[b]]


def shard_chunks(
    rows: Iterable[tuple[str, Any]], chunk_rows: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[list[str], list[Any]]]:
    """This rank's rows (row ``g`` with ``g % world_size == rank``), ``chunk_rows`` at a
    time, as ``(texts, labels)``: the feedforward pass's shard, with no row dropped or
    repeated."""
    texts: list[str] = []
    labels: list[Any] = []
    for g, (text, label) in enumerate(rows):
        if g % world_size != rank:
            continue
        texts.append(text)
        labels.append(label)
        if len(texts) == chunk_rows:
            yield texts, labels
            texts, labels = [], []
    if texts:
        yield texts, labels


def label_indices(
    labels: Sequence[Any], label_of: dict[Any, int], multi_label: bool = False
) -> np.ndarray:
    """Class indices of ``labels``, or (``multi_label``) a 0/1 row per label set with a column
    per class, as :func:`eft.classifier.encode_labels` encodes them; a label missing from
    ``label_of`` is an input error (the stream changed between passes)."""
    try:
        if not multi_label:
            return np.fromiter(
                (label_of[label] for label in labels), dtype=np.int64, count=len(labels)
            )
        rows = np.zeros((len(labels), len(label_of)), dtype=np.int64)
        for row, labels_of_row in enumerate(labels):
            rows[row, [label_of[label] for label in labels_of_row]] = 1
        return rows
    except KeyError as exc:
        raise InputError(
            f"label {exc.args[0]!r} was not in the stream's first pass; the data changed "
            "while training"
        ) from None
