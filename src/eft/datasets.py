"""Dataset readers: generic labelled files and the published benchmark formats (paper 4.1, App. C).

Every loader returns a :class:`Dataset` whose :class:`Split` objects hold raw texts and the label
NAMES as strings (``"joy"``, ``"positive"``, ``"Sci/Tech"``, ``"DESC"``...), so that predictions
files and reports never depend on an integer encoding.

The benchmark loaders read the files exactly as they are published (see the data folder's
``README.md``). ``data_dir`` is the root that holds ``meld/``, ``iemocap/``, ``imdb/``,
``ag_news/``, ``sst2/`` and ``trec/``; it is resolved as: the explicit argument, else the
environment variable ``EFT_DATA_DIR``, else ``~/.cache/eft/data``.

Following paper 4.1, MELD and IEMOCAP keep their official splits, while 10% of the training set
of IMDb and AG News (which have no validation set) is held out for validation with a fixed
numpy seed, so the same split comes back on every run.

Every problem with the user's input (missing file or column, bad encoding, malformed rows...)
raises :class:`eft.errors.InputError` with a one-line message that says what to fix.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import inspect
import json
import os
import re
import sys
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eft.errors import InputError

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "load",
    "load_ag_news",
    "load_iemocap",
    "load_imdb",
    "load_meld",
    "load_sst2",
    "load_trec",
    "read_labeled_file",
    "read_text_file",
    "resolve_data_dir",
    "subsample",
]

#: Names accepted by :func:`load` (plus ``hf:<name>`` for the Hugging Face hub).
DATASETS: tuple[str, ...] = ("meld", "iemocap", "imdb", "ag_news", "trec", "sst2")

DATA_DIR_ENV = "EFT_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/eft/data")
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
_FILE_SPLITS = (("train", "train"), ("validation", "dev"), ("test", "test"))  # ours, file's

MELD_EMOTIONS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
MELD_SENTIMENTS = ["neutral", "positive", "negative"]
IEMOCAP_LABELS = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
IEMOCAP_ABBREVIATIONS = {
    "hap": "happy",
    "sad": "sad",
    "neu": "neutral",
    "ang": "angry",
    "exc": "excited",
    "fru": "frustrated",
}
BINARY_SENTIMENT = ["negative", "positive"]
AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TREC_COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]

_TABLE_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_TEXT_KINDS = {**_TABLE_KINDS, ".txt": "txt"}
_EXTRA = "\x00extra"  # DictReader restkey: fields beyond the header


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split: texts, label names, and (for dialogue datasets) conversation structure.

    ``dialogue_ids``, ``utterance_ids`` and ``speakers`` are ``None`` for datasets without
    dialogues; when present they are aligned with ``texts`` (used by :mod:`eft.context`).
    """

    texts: list[str]
    labels: list[Any]
    dialogue_ids: list[Any] | None = None
    utterance_ids: list[int] | None = None
    speakers: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        for name in ("labels", "dialogue_ids", "utterance_ids", "speakers"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise InputError(
                    f"Split.{name} has {len(values)} entries but texts has {n}; "
                    "every field must have one entry per text"
                )

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: Sequence[int] | np.ndarray) -> Split:
        """A new split with the rows at ``indices`` (in that order)."""
        idx = [int(i) for i in indices]

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in idx]

        return Split(
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            dialogue_ids=pick(self.dialogue_ids),
            utterance_ids=pick(self.utterance_ids),
            speakers=pick(self.speakers),
        )


@dataclass
class Dataset:
    """A named dataset: splits ``"train"``, ``"validation"``, ``"test"`` (any may be missing).

    ``label_names`` lists every class in a fixed, documented order (given per loader); the
    labels inside the splits are these names.
    """

    name: str
    splits: dict[str, Split] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise InputError(
                f"dataset {self.name!r} has no {split!r} split; available: "
                f"{', '.join(self.splits) or 'none'}"
            )
        return self.splits[split]

    def __contains__(self, split: object) -> bool:
        return split in self.splits

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{split: {"size": N, "labels": {name: count}}}``; labels in ``label_names`` order.

        Every name of ``label_names`` appears (count 0 if absent); labels outside it are listed
        after them, sorted.
        """
        out: dict[str, dict[str, Any]] = {}
        for name in SPLIT_NAMES + tuple(s for s in self.splits if s not in SPLIT_NAMES):
            if name not in self.splits:
                continue
            split = self.splits[name]
            counts = Counter(str(label) for label in split.labels)
            labels = {label: counts.pop(label, 0) for label in self.label_names}
            labels.update({label: counts[label] for label in sorted(counts)})
            out[name] = {"size": len(split), "labels": labels}
        return out


# --------------------------------------------------------------------------------------------
# Generic readers
# --------------------------------------------------------------------------------------------


@dataclass
class _Table:
    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]  # (line number, record)


def _file_kind(path: Path, kinds: dict[str, str]) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    kind = kinds.get(Path(name).suffix)
    if kind is None:
        supported = ", ".join(f"{ext}[.gz]" for ext in kinds)
        raise InputError(
            f"unsupported file type for {path}; supported: {supported} (CSV/TSV need a header row)"
        )
    return kind


def _open_text(path: Path, encoding: str = "utf-8-sig", newline: str | None = ""):
    """Open a (possibly gzipped) text file for reading (``newline=""`` as csv needs)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return open(path, encoding=encoding, newline=newline)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"file not found: {path}; check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the path of a data file")


def _decode_error(path: Path, error: UnicodeDecodeError) -> InputError:
    """Turn a decode error into a message with the absolute byte offset of the bad byte
    (found by decoding the file again in 1 MiB blocks, so a file larger than memory is fine)."""
    offset: int | None = None
    byte = None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as handle:
            read = 0
            while offset is None:
                block = handle.read(1 << 20)
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    # exc.object is the decoder's carried-over bytes plus this block
                    carried = len(exc.object) - len(block)
                    offset, byte = read - carried + exc.start, exc.object[exc.start]
                if not block:
                    break
                read += len(block)
    except (OSError, EOFError, zlib.error):
        pass
    where = "" if offset is None else f" (byte 0x{byte:02x} at byte offset {offset})"
    if path.name.lower().endswith(".gz") and offset is not None:
        where = where[:-1] + " of the decompressed data)"
    command = f"iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}"
    if path.name.lower().endswith(".gz"):  # iconv reads text, not gzip
        command = f"zcat {path.name} | iconv -f latin1 -t utf-8 | gzip > utf8-{path.name}"
    return InputError(
        f"{path} is not UTF-8 encoded{where}; re-encode it as UTF-8, e.g. `{command}`"
    )


def _read_failure(error: BaseException) -> str:
    """Why a file could not be read, in words (zlib names damaged gzip data by its codes)."""
    if isinstance(error, zlib.error):
        return f"damaged gzip data ({error})"
    return str(error)


class _LineTap:
    """A file's lines as csv reads them, keeping those of the record being read (so that the
    last record can be parsed again strictly: an unclosed quote swallows the rest of the file
    into one field, which csv's lax mode reads without a word)."""

    def __init__(self, handle: Iterable[str]) -> None:
        self.handle, self.lines = iter(handle), list[str]()

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.lines.append(line)
        return line


def _read_lines(path: Path, encoding: str = "utf-8-sig") -> list[str]:
    """All lines of a (possibly gzipped) text file, without line endings.

    Only ``\n``, ``\r\n`` and ``\r`` end a line (not ``str.splitlines``'s extra breaks such
    as Latin-1 ``\x85``).
    """
    _check_readable(path)
    try:
        with _open_text(path, encoding, newline=None) as handle:
            return [line.rstrip("\n") for line in handle]
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {path}: {_read_failure(exc)}") from None


def _iter_records(
    path: Path,
    kind: str | None = None,
    *,
    quoting: int | None = None,
    header: Sequence[str] | None = None,
    encoding: str = "utf-8-sig",
    columns_out: list[str] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)`` from a CSV/TSV (header row unless ``header`` is given)
    or JSONL file, reading it lazily: the file is never held in memory as a whole.

    TSV is read without quote handling by default (``csv.QUOTE_NONE``), as GLUE-style files
    contain bare ``"``; CSV uses standard double-quote escaping. ``columns_out`` receives the
    column names (the header, or the JSON keys in order of first appearance).
    """
    path = Path(path)
    _check_readable(path)
    kind = kind or _file_kind(path, _TABLE_KINDS)
    columns = columns_out if columns_out is not None else []
    try:
        with _open_text(path, encoding) as handle:
            if kind == "jsonl":
                seen: set[str] = set(columns)
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(
                            f"{path}: line {line_no} is not valid JSON ({exc.msg}); "
                            "each line of a .jsonl file must be one JSON object"
                        ) from None
                    if not isinstance(record, dict):
                        raise InputError(
                            f"{path}: line {line_no} is a JSON {type(record).__name__}, not an "
                            'object; write one {"text": ..., "label": ...} object per line'
                        )
                    for key in record:
                        if key not in seen:
                            seen.add(key)
                            columns.append(key)
                    yield line_no, record
                return

            delimiter = "\t" if kind == "tsv" else ","
            if quoting is None:
                quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
            csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
            tap = _LineTap(handle)
            reader = csv.DictReader(
                tap,
                fieldnames=list(header) if header is not None else None,
                delimiter=delimiter,
                quoting=quoting,
                restkey=_EXTRA,
                restval=None,
            )
            try:
                names = list(reader.fieldnames or [])
                while not names and header is None:  # blank lines before the header row
                    row = next(reader.reader, None)
                    if row is None:
                        break
                    names = row
                if not names:
                    raise InputError(f"{path} is empty: no header row and no data")
                if header is None:
                    names = [c.strip() for c in names]
                    # (unnamed columns, as spreadsheets export empty ones, are never read)
                    twice = sorted({c for c in names if c and names.count(c) > 1})
                    if twice:
                        raise InputError(
                            f"{path}: the header names the column(s) {twice} more than once; "
                            "rename them so that each column has its own name"
                        )
                    reader.fieldnames = names
                columns[:] = names
                tap.lines = []
                last: list[str] = []
                for record in reader:
                    last, tap.lines = tap.lines, []
                    # the record's first line (csv counts its last), after blank lines skipped
                    blank = next((i for i, line in enumerate(last) if line.strip()), 0)
                    yield reader.line_num - len(last) + 1 + blank, record
                if len(last) > 1 and quoting != csv.QUOTE_NONE:
                    _refuse_unclosed_quote(path, last, reader.line_num, delimiter, quoting)
            except csv.Error as exc:
                raise InputError(
                    f"{path}: malformed {kind.upper()} near line {reader.line_num} ({exc}); "
                    "check the quoting of that row"
                ) from None
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {path}: {_read_failure(exc)}") from None


def _refuse_unclosed_quote(
    path: Path, lines: list[str], end_line: int, delimiter: str, quoting: int
) -> None:
    """The last record of a file, spanning several lines, parsed again strictly: a quote
    opened and never closed took the rest of the file into one field."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            first = end_line - len(lines) + 1
            raise InputError(
                f"{path}: a quoted field opened on line {first} is never closed, so the "
                f"{len(lines)} lines from there to the end of the file would be one field; "
                'close the quote (or double a quote inside a quoted field: "")'
            ) from None


def _read_table(
    path: Path,
    kind: str | None = None,
    *,
    quoting: int | None = None,
    header: Sequence[str] | None = None,
    encoding: str = "utf-8-sig",
) -> _Table:
    """Read a whole CSV/TSV/JSONL file into records (see :func:`_iter_records`)."""
    path = Path(path)
    _check_readable(path)
    kind = kind or _file_kind(path, _TABLE_KINDS)
    columns: list[str] = []
    rows = list(
        _iter_records(
            path, kind, quoting=quoting, header=header, encoding=encoding, columns_out=columns
        )
    )
    if not rows and kind == "jsonl":
        raise InputError(f"{path} is empty: no JSON lines found")
    if not rows and header is not None:
        raise InputError(f"{path} is empty: no data rows")
    if not rows:
        raise InputError(f"{path} has a header row but no data rows; add some examples")
    return _Table(path, columns, rows)


def _require_column(table: _Table, column: str, option: str = "") -> None:
    if column in table.columns:
        return
    lowered = {c.lower(): c for c in table.columns}
    match = difflib.get_close_matches(column.lower(), list(lowered), n=1, cutoff=0.6)
    hint = f"; did you mean '{lowered[match[0]]}'?" if match else ""
    if not hint and option:  # the option as the command line and Python spell it
        hint = f"; choose one with --{option.replace('_', '-')} ({option}=)"
    raise InputError(
        f"column '{column}' not found in {table.path.name}; "
        f"available: {', '.join(table.columns)}{hint}"
    )


def _row_problem(
    record: dict[str, Any],
    text_column: str,
    label_column: str | None,
    pair_column: str = "",
    multi_label: bool = False,
) -> str:
    """Why a record is unusable ('' when it is fine). ``multi_label``: the label is a JSON list
    or a string to split (empty: no label), not one label."""
    extra = record.get(_EXTRA)
    if extra:
        return f"{len(extra)} more field(s) than the header"
    for column in (text_column, pair_column) if pair_column else (text_column,):
        text = record.get(column)
        if text is None:
            return f"missing '{column}'"
        if not isinstance(text, str):
            return f"'{column}' is a {type(text).__name__}, not a string"
        if not text.strip():
            return f"empty '{column}'"
    if label_column is not None:
        label = record.get(label_column)
        if multi_label:
            if label is None:
                return f"missing '{label_column}'"
            if isinstance(label, dict) or (
                isinstance(label, list) and not all(_is_scalar(v) for v in label)
            ):
                return f"'{label_column}' is not a list of labels"
            return ""
        if label is None or (isinstance(label, str) and not label.strip()):
            return f"missing '{label_column}'"
        if isinstance(label, list):
            return (
                f"'{label_column}' is a JSON list, not a single label (multi-label data: "
                "`eft train --multi-label`)"
            )
        if isinstance(label, dict):
            return f"'{label_column}' is a JSON dict, not a single label"
    return ""


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _filter_rows(
    table: _Table,
    text_column: str,
    label_column: str | None,
    bad_rows: str,
    pair_column: str = "",
    multi_label: bool = False,
) -> list[dict[str, Any]]:
    if bad_rows not in ("error", "skip"):
        raise InputError(f"bad_rows must be 'error' or 'skip', not {bad_rows!r}")
    good: list[dict[str, Any]] = []
    first: tuple[int, int, str] | None = None
    n_bad = 0
    for row_no, (line_no, record) in enumerate(table.rows, 1):
        problem = _row_problem(record, text_column, label_column, pair_column, multi_label)
        if problem:
            n_bad += 1
            if first is None:
                first = (row_no, line_no, problem)
        else:
            good.append(record)
    if n_bad:
        assert first is not None
        row_no, line_no, problem = first
        if bad_rows == "error":
            raise InputError(
                f"{table.path.name}: {n_bad} bad row(s) (empty or missing text, missing label "
                f"or wrong number of fields); first: data row {row_no} (line {line_no}): "
                f"{problem}; fix or remove them, or skip them with bad_rows='skip' "
                f"(--bad-rows skip)"
            )
        warnings.warn(
            f"{table.path.name}: skipped {n_bad} bad row(s) of {len(table.rows)} (first: data "
            f"row {row_no}, line {line_no}: {problem})",
            UserWarning,
            stacklevel=3,
        )
        if not good:
            raise InputError(f"{table.path.name}: every row is bad ({problem}); nothing to read")
    return good


def _label_str(value: Any) -> str:
    """A label as a string: stripped text, or a JSON number or boolean as Python spells it
    (``1``, ``1.0``, ``True``), as pandas and the csv module write them to a CSV file, so a
    JSONL file and its CSV twin give the same labels (and models trained on either agree)."""
    return value.strip() if isinstance(value, str) else str(value)


def _label_set(value: Any, separator: str) -> tuple[str, ...]:
    """A multi-label cell as a tuple of label strings: a JSON list, or a string split on
    ``separator`` (blank parts dropped, so an empty cell is no label)."""
    if isinstance(value, list):
        parts = value
    elif isinstance(value, str):
        parts = value.split(separator)
    else:  # a JSON number or true: one label, spelled as a single label is
        parts = [value]
    return tuple(dict.fromkeys(p for p in map(_label_str, parts) if p))


def read_labeled_file(
    path: str | os.PathLike[str],
    text_column: str = "text",
    label_column: str = "label",
    *,
    bad_rows: str = "error",
    text_pair_column: str | None = None,
    label_separator: str | None = None,
) -> tuple[list[Any], list[Any]]:
    """Read texts and labels from a ``.csv``, ``.tsv`` or ``.jsonl`` file (optionally ``.gz``).

    CSV and TSV files need a header row (TSV is read without quote processing, as in GLUE);
    JSONL files hold one object per line. Labels come back as strings (a JSON ``1`` becomes
    ``"1"``); texts are returned unchanged. Rows with an empty/missing/non-string text, a
    missing label or a wrong number of fields are "bad": ``bad_rows="error"`` raises
    :class:`InputError` naming the first one and the count, ``bad_rows="skip"`` drops them
    with a warning. With ``text_pair_column`` every text is a ``(text, text_pair)`` pair of the
    two columns (sentence-pair tasks: NLI, paraphrase), both required.

    With ``label_separator`` the data are multi-label: each label is a tuple of label strings,
    from a JSON list or from the cell split on the separator (``"sports|politics"`` with
    ``"|"``); an empty cell or list is a text with no label.
    """
    if label_separator is not None and not label_separator:
        raise InputError("label_separator must be a non-empty string, e.g. ',' or '|'.")
    table = _read_table(Path(path))
    _require_column(table, text_column, "text_column")
    if text_pair_column:
        _require_column(table, text_pair_column, "text_pair_column")
    _require_column(table, label_column, "label_column")
    multi_label = label_separator is not None
    records = _filter_rows(
        table, text_column, label_column, bad_rows, text_pair_column or "", multi_label
    )
    if multi_label:
        labels: list[Any] = [_label_set(r[label_column], label_separator) for r in records]
    else:
        labels = [_label_str(r[label_column]) for r in records]
    return _texts_of(records, text_column, text_pair_column), labels


def _texts_of(
    records: list[dict[str, Any]], text_column: str, text_pair_column: str | None
) -> list[Any]:
    if text_pair_column:
        return [(r[text_column], r[text_pair_column]) for r in records]
    return [r[text_column] for r in records]


def read_text_file(
    path: str | os.PathLike[str],
    text_column: str = "text",
    *,
    bad_rows: str = "error",
    text_pair_column: str | None = None,
) -> list[Any]:
    """Read unlabelled texts: ``.txt`` (one text per line; blank lines are ignored) or a
    ``.csv``/``.tsv``/``.jsonl`` file with a ``text_column`` (optionally gzipped); with
    ``text_pair_column``, ``(text, text_pair)`` pairs of a table's two columns."""
    path = Path(path)
    _check_readable(path)
    kind = _file_kind(path, _TEXT_KINDS)
    if kind == "txt" and text_pair_column:
        raise InputError(
            f"{path} is a .txt file, one text per line; text pairs need a .csv, .tsv or .jsonl "
            f"file with the columns {text_column!r} and {text_pair_column!r}"
        )
    if kind == "txt" and text_column != "text":
        raise InputError(
            f"{path} is a .txt file, one text per line, without columns; text_column "
            f"(--text-column) {text_column!r} names a column of a .csv, .tsv or .jsonl file: "
            "drop it."
        )
    if kind == "txt":
        texts = [line for line in _read_lines(path) if line.strip()]
        if not texts:
            raise InputError(f"{path} is empty: no non-blank lines")
        return texts
    table = _read_table(path, kind)
    _require_column(table, text_column, "text_column")
    if text_pair_column:
        _require_column(table, text_pair_column, "text_pair_column")
    records = _filter_rows(table, text_column, None, bad_rows, text_pair_column or "")
    return _texts_of(records, text_column, text_pair_column)


# --------------------------------------------------------------------------------------------
# Locating the data and splitting
# --------------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_dir``, else ``$EFT_DATA_DIR``, else ``~/.cache/eft/data``."""
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise InputError(
                f"data directory not found: {root}; pass --data-dir (or set {DATA_DIR_ENV}) to "
                "the folder that contains meld/, imdb/, ag_news/, sst2/, trec/, iemocap/"
            )
        return root
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def _missing(dataset: str, paths: Sequence[Path], note: str = "") -> InputError:
    listed = " and ".join(str(p) for p in paths)
    return InputError(
        f"{dataset} data not found: expected {listed}{note}; put the files there, or pass "
        f"--data-dir DIR (or set {DATA_DIR_ENV}) to the folder that contains "
        f"{paths[0].parent.name}/"
    )


def _need(dataset: str, paths: Sequence[Path]) -> None:
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise _missing(dataset, absent)


def _first_existing(candidates: Sequence[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Split off ``round(fraction * n)`` random rows (numpy ``default_rng(seed)``) for
    validation (None where that is no row); both parts keep the original row order."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation_fraction must be in [0, 1), got {fraction}")
    n_val = int(round(len(split) * fraction))
    if n_val == 0:
        return split, None
    perm = np.random.default_rng(seed).permutation(len(split))
    return split.select(np.sort(perm[n_val:])), split.select(np.sort(perm[:n_val]))


def _with_validation(train: Split, fraction: float, seed: int) -> dict[str, Split]:
    train, validation = hold_out(train, fraction, seed)
    return {"train": train} if validation is None else {"train": train, "validation": validation}


def subsample(split: Split, n: int, seed: int = 0) -> Split:
    """``n`` random rows of ``split`` (no stratification), kept in their original order; the
    whole split when ``n >= len(split)``. Used for ``--max-train N``."""
    if int(n) != n or n < 1:
        raise InputError(f"the number of examples to keep must be a positive integer, got {n}")
    if n >= len(split):
        return split
    idx = np.random.default_rng(seed).choice(len(split), size=int(n), replace=False)
    return split.select(np.sort(idx))


def _check_labels(path: Path, labels: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = sorted(set(labels) - set(allowed))
    if unknown:
        raise InputError(
            f"{path}: unexpected label(s) {', '.join(map(repr, unknown[:5]))}; expected one of "
            f"{', '.join(allowed)} - is this the published file?"
        )


# --------------------------------------------------------------------------------------------
# Benchmark loaders
# --------------------------------------------------------------------------------------------


def load_meld(data_dir: str | os.PathLike[str] | None = None, label: str = "emotion") -> Dataset:
    """MELD text (Poria et al. 2019), official splits: ``meld/{train,dev,test}_sent_emo.csv``.

    Text = ``Utterance``; label = ``Emotion`` (``label="sentiment"`` for ``Sentiment``);
    dialogue/utterance ids and speakers come from ``Dialogue_ID``, ``Utterance_ID`` and
    ``Speaker``; file order is kept and the UTF-8 text is kept verbatim.
    ``label_names``: neutral, joy, surprise, anger, sadness, disgust, fear (train frequency order)
    or neutral, positive, negative.
    """
    if label not in ("emotion", "sentiment"):
        raise InputError(f"MELD label must be 'emotion' or 'sentiment', not {label!r}")
    label_column, names = (
        ("Emotion", MELD_EMOTIONS) if label == "emotion" else ("Sentiment", MELD_SENTIMENTS)
    )
    folder = resolve_data_dir(data_dir) / "meld"
    files = {split: folder / f"{stem}_sent_emo.csv" for split, stem in _FILE_SPLITS}
    _need("MELD", list(files.values()))
    splits = {}
    for split_name, path in files.items():
        table = _read_table(path)
        for column in ("Utterance", "Speaker", label_column, "Dialogue_ID", "Utterance_ID"):
            _require_column(table, column)
        records = _filter_rows(table, "Utterance", label_column, "error")
        labels = [r[label_column].strip().lower() for r in records]
        _check_labels(path, labels, names)
        splits[split_name] = Split(
            texts=[r["Utterance"] for r in records],
            labels=labels,
            dialogue_ids=[_as_int(path, r["Dialogue_ID"], "Dialogue_ID") for r in records],
            utterance_ids=[_as_int(path, r["Utterance_ID"], "Utterance_ID") for r in records],
            speakers=[r["Speaker"] for r in records],
        )
    return Dataset("meld", splits, list(names))


def _as_int(path: Path, value: Any, column: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(f"{path}: {column} must be an integer, got {value!r}") from None


def _iemocap_label(path: Path, where: str, value: str) -> str:
    label = value.strip().lower()
    label = IEMOCAP_ABBREVIATIONS.get(label, label)
    if label not in IEMOCAP_LABELS:
        raise InputError(
            f"{path}: {where}: unknown IEMOCAP label {value!r}; expected one of "
            f"{', '.join(IEMOCAP_LABELS)}"
        )
    return label


def _read_iemocap_txt(path: Path) -> Split:
    texts: list[str] = []
    labels: list[str] = []
    dialogues: list[int] = []
    utterances: list[int] = []
    speakers: list[str] = []
    dialogue, position = 0, 0
    for line_no, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            if position:
                dialogue, position = dialogue + 1, 0
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[1].strip():
            raise InputError(
                f"{path}: line {line_no} must be 'speaker<TAB>utterance<TAB>label' "
                f"(found {len(parts)} tab-separated field(s)); dialogues are separated by blank "
                "lines"
            )
        speaker, text, label = parts
        speakers.append(speaker.strip())
        texts.append(text)
        labels.append(_iemocap_label(path, f"line {line_no}", label))
        dialogues.append(dialogue)
        utterances.append(position)
        position += 1
    if not texts:
        raise InputError(f"{path} is empty: no utterances found")
    return Split(texts, labels, dialogues, utterances, speakers)


def _read_iemocap_csv(path: Path) -> Split:
    table = _read_table(path, "csv")
    for column in ("dialogue_id", "utterance_id", "speaker", "text", "label"):
        _require_column(table, column)
    records = _filter_rows(table, "text", "label", "error")

    def dialogue_id(value: str) -> int | str:
        value = value.strip()
        return int(value) if re.fullmatch(r"-?\d+", value) else value

    return Split(
        texts=[r["text"] for r in records],
        labels=[_iemocap_label(path, f"dialogue {r['dialogue_id']}", r["label"]) for r in records],
        dialogue_ids=[dialogue_id(r["dialogue_id"] or "") for r in records],
        utterance_ids=[_as_int(path, r["utterance_id"], "utterance_id") for r in records],
        speakers=[(r["speaker"] or "").strip() for r in records],
    )


def load_iemocap(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """IEMOCAP text transcripts (Busso et al. 2008), 6 classes, from ``iemocap/``.

    Two layouts (the ``.txt`` one wins when both exist):

    * ``iemocap_{train,dev,test}.txt``: one ``speaker<TAB>utterance<TAB>label`` line per
      utterance and a blank line between dialogues; dialogue id = running index of the block
      in the file, utterance id = position within the block;
    * ``iemocap_{train,dev,test}.csv`` with header ``dialogue_id,utterance_id,speaker,text,label``.

    ``label_names``: happy, sad, neutral, angry, excited, frustrated (the abbreviations hap, sad,
    neu, ang, exc, fru are accepted). The dev file is optional (a warning says when it is absent).
    """
    folder = resolve_data_dir(data_dir) / "iemocap"
    stems = {split: f"iemocap_{stem}" for split, stem in _FILE_SPLITS}
    readers = {".txt": _read_iemocap_txt, ".csv": _read_iemocap_csv}
    ext = next((e for e in readers if (folder / f"{stems['train']}{e}").is_file()), None)
    if ext is None:
        raise _missing(
            "IEMOCAP",
            [folder / f"{stems['train']}.txt", folder / f"{stems['test']}.txt"],
            " (or the same names ending in .csv)",
        )
    reader = readers[ext]
    paths = {s: folder / f"{stem}{ext}" for s, stem in stems.items()}
    _need("IEMOCAP", [paths["train"], paths["test"]])
    if not paths["validation"].is_file():
        warnings.warn(
            f"IEMOCAP dev file not found ({paths['validation']}); loading train and test only",
            UserWarning,
            stacklevel=2,
        )
        del paths["validation"]
    return Dataset("iemocap", {s: reader(p) for s, p in paths.items()}, list(IEMOCAP_LABELS))


def _imdb_key(path: Path) -> tuple[int, int]:
    stem = path.stem
    match = re.fullmatch(r"(\d+)_(\d+)", stem)
    if not match:
        raise InputError(f"unexpected IMDb file name {path}; expected <id>_<rating>.txt")
    return int(match.group(1)), int(match.group(2))


def _read_acl_imdb(root: Path, split: str) -> Split:
    texts: list[str] = []
    labels: list[str] = []
    for polarity, name in (("neg", "negative"), ("pos", "positive")):
        folder = root / split / polarity
        if not folder.is_dir():
            raise _missing("IMDb", [folder])
        for path in sorted(folder.glob("*.txt"), key=_imdb_key):
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise _decode_error(path, exc) from None
            labels.append(name)
    if not texts:
        raise InputError(f"no reviews found under {root / split}/{{neg,pos}}/*.txt")
    return Split(texts, labels)


def _read_imdb_jsonl(path: Path) -> Split:
    table = _read_table(path, "jsonl")
    _require_column(table, "text")
    _require_column(table, "label")
    records = _filter_rows(table, "text", "label", "error")
    mapping = {"0": "negative", "1": "positive", "neg": "negative", "pos": "positive"}
    mapping.update({n: n for n in BINARY_SENTIMENT})
    raw = [_label_str(r["label"]) for r in records]
    _check_labels(path, raw, list(mapping))
    return Split([r["text"] for r in records], [mapping[x] for x in raw])


def load_imdb(
    data_dir: str | os.PathLike[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> Dataset:
    """IMDb reviews (Maas et al. 2011): 25,000 train / 25,000 test, ``label_names`` negative,
    positive.

    Reads ``imdb/imdb_{train,test}.jsonl.gz`` or the official tree
    ``{imdb/,}aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` (both in the same order: neg
    then pos, by numeric id, so they give the same split). ``validation_fraction`` of train is
    held out with ``numpy.random.default_rng(seed)`` (paper 4.1): 22,500 / 2,500 / 25,000.
    Texts are kept raw (including ``<br />`` tags).
    """
    root = resolve_data_dir(data_dir)
    jsonl = {s: root / "imdb" / f"imdb_{s}.jsonl.gz" for s in ("train", "test")}
    if all(p.is_file() for p in jsonl.values()):
        train, test = _read_imdb_jsonl(jsonl["train"]), _read_imdb_jsonl(jsonl["test"])
    else:
        tree = next(
            (r for r in (root / "imdb" / "aclImdb", root / "aclImdb") if (r / "train").is_dir()),
            None,
        )
        if tree is None:
            raise _missing(
                "IMDb", list(jsonl.values()), f" (or the aclImdb tree under {root / 'imdb'})"
            )
        train, test = _read_acl_imdb(tree, "train"), _read_acl_imdb(tree, "test")
    splits = _with_validation(train, validation_fraction, seed)
    splits["test"] = test
    return Dataset("imdb", splits, list(BINARY_SENTIMENT))


def _ag_news_text(title: str, description: str) -> str:
    """Title + " " + description. The files escape line breaks with a backslash (the readme
    says "\\n", but the data has e.g. ``its\\network``, the word "network"), so every run of
    backslashes becomes one space."""
    text = f"{title.strip()} {description.strip()}"
    return re.sub(r"\\+", " ", text).strip()


def _read_ag_news(path: Path) -> Split:
    table = _read_table(path, "csv", header=("class", "title", "description"))
    texts: list[str] = []
    labels: list[str] = []
    for line_no, record in table.rows:
        klass, title, description = record["class"], record["title"], record["description"]
        if record.get(_EXTRA) or description is None or title is None:
            raise InputError(
                f"{path}: line {line_no} must have 3 fields: class (1-4), title, description"
            )
        if klass.strip() not in ("1", "2", "3", "4"):
            raise InputError(f"{path}: line {line_no}: class must be 1-4, got {klass!r}")
        texts.append(_ag_news_text(title, description))
        labels.append(AG_NEWS_LABELS[int(klass) - 1])
    return Split(texts, labels)


def load_ag_news(
    data_dir: str | os.PathLike[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    test_fraction: float | None = None,
) -> Dataset:
    """AG News (Zhang et al. 2015): ``ag_news/{train,test}.csv`` (no header; ``class, title,
    description`` with class 1-4). ``label_names``: World, Sports, Business, Sci/Tech.

    Text = title + " " + description with the backslash line-break escapes turned into spaces.
    ``validation_fraction`` of train is held out (paper 4.1). The train file (``train.csv`` or
    ``train.csv.gz``) is optional: without it only the test split is loaded, with a warning,
    unless ``test_fraction`` is given: then the test file is divided with ``seed``, that
    fraction staying the test split and the rest becoming train (and validation), so that
    experiments can run on the 7,600 test articles alone.
    """
    folder = resolve_data_dir(data_dir) / "ag_news"
    test_path = _first_existing([folder / "test.csv", folder / "test.csv.gz"])
    if test_path is None:
        raise _missing("AG News", [folder / "test.csv"])
    train_path = _first_existing([folder / "train.csv", folder / "train.csv.gz"])
    splits: dict[str, Split] = {}
    if test_fraction is not None:
        if train_path is not None:
            raise InputError(
                f"test_fraction divides the test split when the train split is missing, but "
                f"{train_path} exists; drop test_fraction to use it"
            )
        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
        train, test = hold_out(_read_ag_news(test_path), test_fraction, seed)
        assert test is not None
        return Dataset(
            "ag_news",
            {**_with_validation(train, validation_fraction, seed), "test": test},
            list(AG_NEWS_LABELS),
        )
    if train_path is None:
        warnings.warn(
            f"AG News train split not found ({folder / 'train.csv'}); loaded the test split "
            "only, so training on ag_news needs that file",
            UserWarning,
            stacklevel=2,
        )
    else:
        splits = _with_validation(_read_ag_news(train_path), validation_fraction, seed)
    splits["test"] = _read_ag_news(test_path)
    return Dataset("ag_news", splits, list(AG_NEWS_LABELS))


def _read_trec(path: Path, fine: bool) -> Split:
    texts: list[str] = []
    labels: list[str] = []
    for line_no, line in enumerate(_read_lines(path, encoding="latin-1"), 1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        coarse, colon, _ = label.partition(":")
        if not colon or coarse not in TREC_COARSE or not text.strip():
            raise InputError(
                f"{path}: line {line_no} must look like 'COARSE:fine question' with COARSE one "
                f"of {', '.join(TREC_COARSE)}; got {line[:40]!r}"
            )
        texts.append(text.strip())
        labels.append(label if fine else coarse)
    if not texts:
        raise InputError(f"{path} is empty: no questions found")
    return Split(texts, labels)


def load_trec(
    data_dir: str | os.PathLike[str] | None = None,
    fine: bool = False,
    validation_fraction: float = 0.0,
    seed: int = 42,
) -> Dataset:
    """TREC question classification (Li & Roth 2002): ``trec/TREC.{train,test}`` (Latin-1).

    Labels are the coarse class (``label_names`` ABBR, DESC, ENTY, HUM, LOC, NUM) or, with
    ``fine=True``, the full fine label such as ``"DESC:manner"`` (``label_names`` sorted).
    No validation split unless ``validation_fraction > 0``.
    """
    folder = resolve_data_dir(data_dir) / "trec"
    paths = {"train": folder / "TREC.train", "test": folder / "TREC.test"}
    _need("TREC", list(paths.values()))
    train, test = _read_trec(paths["train"], fine), _read_trec(paths["test"], fine)
    splits = _with_validation(train, validation_fraction, seed)
    splits["test"] = test
    names = sorted(set(train.labels) | set(test.labels)) if fine else list(TREC_COARSE)
    return Dataset("trec", splits, names)


def _read_stsa(path: Path) -> Split:
    texts: list[str] = []
    labels: list[str] = []
    for line_no, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        if label not in ("0", "1") or not text.strip():
            raise InputError(
                f"{path}: line {line_no} must be '<0|1> <sentence>'; got {line[:40]!r}"
            )
        texts.append(text.strip())
        labels.append(BINARY_SENTIMENT[int(label)])
    return Split(texts, labels)


def _read_glue_sst2(path: Path) -> Split:
    table = _read_table(path, "tsv", quoting=csv.QUOTE_NONE)
    _require_column(table, "sentence")
    _require_column(table, "label")
    records = _filter_rows(table, "sentence", "label", "error")
    raw = [_label_str(r["label"]) for r in records]
    _check_labels(path, raw, ["0", "1"])
    return Split([r["sentence"].strip() for r in records], [BINARY_SENTIMENT[int(x)] for x in raw])


def load_sst2(data_dir: str | os.PathLike[str] | None = None, variant: str = "sentence") -> Dataset:
    """SST-2 (Socher et al. 2013), ``label_names`` negative, positive.

    ``variant="sentence"``: Kim (2014) sentence-level ``sst2/stsa.binary.{train,dev,test}``
    (6,920 / 872 / 1,821). ``variant="glue"``: GLUE phrase-level ``glue_sst2_train.tsv.gz``
    (67,349) and ``glue_sst2_dev.tsv`` as validation (872); no test split (its labels are not
    public). GLUE files are read with ``csv.QUOTE_NONE`` (bare quotes in sentences).
    """
    folder = resolve_data_dir(data_dir) / "sst2"
    if variant == "sentence":
        paths = {split: folder / f"stsa.binary.{stem}" for split, stem in _FILE_SPLITS}
        _need("SST-2 (sentence-level)", list(paths.values()))
        splits = {s: _read_stsa(p) for s, p in paths.items()}
    elif variant == "glue":
        train = _first_existing([folder / "glue_sst2_train.tsv.gz", folder / "glue_sst2_train.tsv"])
        dev = _first_existing([folder / "glue_sst2_dev.tsv", folder / "glue_sst2_dev.tsv.gz"])
        if train is None or dev is None:
            raise _missing(
                "SST-2 (GLUE)", [folder / "glue_sst2_train.tsv.gz", folder / "glue_sst2_dev.tsv"]
            )
        splits = {"train": _read_glue_sst2(train), "validation": _read_glue_sst2(dev)}
    else:
        raise InputError(f"SST-2 variant must be 'sentence' or 'glue', not {variant!r}")
    return Dataset("sst2", splits, list(BINARY_SENTIMENT))


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "meld": load_meld,
    "iemocap": load_iemocap,
    "imdb": load_imdb,
    "ag_news": load_ag_news,
    "trec": load_trec,
    "sst2": load_sst2,
}
_ALIASES = {"agnews": "ag_news", "sst": "sst2", "sst_2": "sst2"}


def _load_hf(
    name: str, text_column: str | None = None, label_column: str = "label", **kwargs: Any
) -> Dataset:
    """Load ``name`` with Hugging Face ``datasets`` and map it to a :class:`Dataset`."""
    try:
        from datasets import load_dataset  # type: ignore[import-not-found]
    except ImportError:
        raise InputError(
            f"loading 'hf:{name}' needs the Hugging Face datasets library: pip install datasets"
        ) from None
    try:
        hf = load_dataset(name, **kwargs)
    except Exception as exc:  # network, unknown name, bad config...
        raise InputError(f"could not load 'hf:{name}' with datasets.load_dataset: {exc}") from None
    split_map = {
        "train": "train",
        "validation": "validation",
        "valid": "validation",
        "dev": "validation",
        "test": "test",
    }
    splits: dict[str, Split] = {}
    label_names: list[str] = []
    for hf_split, ours in split_map.items():
        if hf_split not in hf or ours in splits:
            continue
        part = hf[hf_split]
        columns = list(part.column_names)
        text_col = text_column or next(
            (c for c in ("text", "sentence", "content", "review") if c in columns), None
        )
        if text_col is None or text_col not in columns:
            raise InputError(
                f"hf:{name}: text column {text_column or 'text'!r} not found; available: "
                f"{', '.join(columns)}; pass text_column=..."
            )
        if label_column not in columns:
            raise InputError(
                f"hf:{name}: label column {label_column!r} not found; available: "
                f"{', '.join(columns)}; pass label_column=..."
            )
        feature = part.features[label_column]
        names = list(getattr(feature, "names", []) or [])
        texts: list[str] = []
        labels: list[str] = []
        for text, raw in zip(part[text_col], part[label_column], strict=True):
            if isinstance(raw, int) and raw < 0:  # -1 = unlabelled (e.g. GLUE test)
                continue
            texts.append(text)
            labels.append(names[raw] if names and isinstance(raw, int) else str(raw))
        if not texts:
            continue
        splits[ours] = Split(texts, labels)
        label_names = label_names or names
    if not splits:
        raise InputError(f"hf:{name} has no labelled train/validation/test split")
    if not label_names:
        label_names = sorted({lab for s in splits.values() for lab in s.labels})
    return Dataset(f"hf:{name}", splits, label_names)


def canonical_name(name: str) -> str:
    """A dataset name as :data:`DATASETS` spells it (``AG-News``, ``agnews`` -> ``ag_news``);
    ``hf:`` names and unknown names are returned as given (stripped, lower case)."""
    if name.strip().lower().startswith("hf:"):
        return name.strip()
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def load(name: str, data_dir: str | os.PathLike[str] | None = None, **options: Any) -> Dataset:
    """Load a dataset by name: one of :data:`DATASETS` (``agnews``/``ag-news`` accepted), or
    ``hf:<name>`` through Hugging Face ``datasets`` (``options`` go to ``load_dataset``, plus
    ``text_column``/``label_column``). ``options`` go to the loader (e.g. ``variant="glue"``)."""
    if name.lower().startswith("hf:"):
        return _load_hf(name[3:], **options)
    key = canonical_name(name)
    if key not in _LOADERS:
        raise InputError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, or hf:<name> for a "
            "Hugging Face dataset (or give your own files)"
        )
    loader = _LOADERS[key]
    accepted = [p for p in inspect.signature(loader).parameters if p != "data_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"unknown option(s) for {key}: {', '.join(unknown)}; accepted: "
            f"{', '.join(accepted) or 'none'}"
        )
    return loader(data_dir, **options)
