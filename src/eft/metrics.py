"""Scores and significance tests (paper 4.3).

The paper reports weighted F1 (WF1), accuracy (ACC) or error, averaged over three runs, and
tests significance with paired bootstrap resampling (Koehn, 2004). All scores here are percents
(0-100).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from eft.errors import InputError

__all__ = [
    "METRICS",
    "MULTI_LABEL_METRICS",
    "classification_scores",
    "compare_prediction_files",
    "mean_std",
    "multi_label_scores",
    "paired_bootstrap",
    "per_class_scores",
    "per_label_scores",
    "read_predictions",
]

#: Metric names produced by :func:`classification_scores` (all in percent).
METRICS: tuple[str, ...] = ("accuracy", "weighted_f1", "macro_f1", "error")


def _as_label_arrays(*arrays: Sequence[Any]) -> list[np.ndarray]:
    """Check equal, non-zero lengths and return 1-D arrays (labels compared as given)."""
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise InputError(
            f"label lists have different lengths ({', '.join(str(len(a)) for a in arrays)}); "
            "true labels and predictions must be aligned one to one"
        )
    if 0 in lengths:
        raise InputError("no examples to score: the label lists are empty")
    return [np.asarray(a) for a in arrays]


def classification_scores(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """Accuracy, weighted F1, macro F1 and error (100 - accuracy), in percent.

    F1 of a class with no true and no predicted examples counts as 0 (``zero_division=0``);
    macro F1 averages over the labels seen in ``y_true`` or ``y_pred``.
    """
    y_true_a, y_pred_a = _as_label_arrays(y_true, y_pred)
    accuracy = 100.0 * float(accuracy_score(y_true_a, y_pred_a))
    return {
        "accuracy": accuracy,
        "weighted_f1": 100.0
        * float(f1_score(y_true_a, y_pred_a, average="weighted", zero_division=0)),
        "macro_f1": 100.0 * float(f1_score(y_true_a, y_pred_a, average="macro", zero_division=0)),
        "error": 100.0 - accuracy,
    }


def per_class_scores(
    y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] | None = None
) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 (percent) and support of every label in ``labels`` (in that
    order; by default every label in ``y_true`` or ``y_pred``), keyed by the label as a string
    (scikit-learn's ``classification_report``). A label absent from both scores 0 with
    support 0, as :func:`per_label_scores` lists every label of a multi-label model."""
    y_true_a, y_pred_a = _as_label_arrays(y_true, y_pred)
    if labels is None:
        labels = np.unique(np.concatenate([y_true_a, y_pred_a]))
    labels = np.asarray(labels)
    scores = precision_recall_fscore_support(y_true_a, y_pred_a, labels=labels, zero_division=0)
    return _per_label_rows(labels.tolist(), *scores)


def _per_label_rows(labels: Sequence[Any], *scores: np.ndarray) -> dict[str, dict[str, float]]:
    """``{label: {precision, recall, f1 (percent), support}}`` from scikit-learn's arrays."""
    precision, recall, f1, support = scores
    return {
        str(label): {
            "precision": 100.0 * float(p),
            "recall": 100.0 * float(r),
            "f1": 100.0 * float(f),
            "support": int(n),
        }
        for label, p, r, f, n in zip(labels, precision, recall, f1, support, strict=True)
    }


#: Metric names produced by :func:`multi_label_scores` (all in percent).
MULTI_LABEL_METRICS: tuple[str, ...] = (
    "subset_accuracy",
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "samples_f1",
    "hamming_loss",
)


def multi_label_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Multi-label scores of 0/1 indicator matrices (n, n_labels), in percent: the subset
    accuracy (every label of a text right; also as ``accuracy``), F1 averaged over all
    label decisions (micro), over labels (macro, weighted by support) and over texts
    (samples), and the Hamming loss (the share of wrong label decisions)."""
    y_true_a, y_pred_a = _as_label_arrays(y_true, y_pred)
    if y_true_a.ndim != 2 or y_true_a.shape != y_pred_a.shape:
        raise InputError(
            f"multi-label scores need two 0/1 matrices of one shape; got {y_true_a.shape} and "
            f"{y_pred_a.shape}"
        )
    subset = 100.0 * float(accuracy_score(y_true_a, y_pred_a))
    scores = {"subset_accuracy": subset, "accuracy": subset}
    for average in ("micro", "macro", "weighted", "samples"):
        f1 = f1_score(y_true_a, y_pred_a, average=average, zero_division=0)
        scores[f"{average}_f1"] = 100.0 * float(f1)
    scores["hamming_loss"] = 100.0 * float((y_true_a != y_pred_a).mean())
    return scores


def per_label_scores(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Any]
) -> dict[str, dict[str, float]]:
    """Multi-label: precision, recall, F1 (percent) and support of every label (a column of
    the 0/1 matrices), keyed by the label as a string."""
    scores = precision_recall_fscore_support(
        np.asarray(y_true), np.asarray(y_pred), zero_division=0
    )
    return _per_label_rows(list(labels), *scores)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value) over seeds."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise InputError("mean_std needs at least one value")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def _resampled_scores(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, indices: np.ndarray, metric: str
) -> np.ndarray:
    """``metric`` (percent) on each row of ``indices`` (samples x n), from confusion counts.

    Matches scikit-learn: per-class F1 = 2 TP / (n_true + n_pred), 0 when both are 0; weighted
    F1 weights by support; macro F1 averages over classes present in the resample's true or
    predicted labels.
    """
    t = y_true[indices]
    p = y_pred[indices]
    correct = t == p
    if metric in ("accuracy", "error"):
        accuracy = 100.0 * correct.mean(axis=1)
        return accuracy if metric == "accuracy" else 100.0 - accuracy
    rows, n = indices.shape
    offset = (np.arange(rows) * n_classes)[:, None]
    size = rows * n_classes
    n_true = np.bincount((t + offset).ravel(), minlength=size).reshape(rows, n_classes)
    n_pred = np.bincount((p + offset).ravel(), minlength=size).reshape(rows, n_classes)
    tp = np.bincount((t + offset).ravel(), weights=correct.ravel(), minlength=size)
    tp = tp.reshape(rows, n_classes)
    denominator = n_true + n_pred
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    if metric == "weighted_f1":
        return 100.0 * (f1 * n_true).sum(axis=1) / n
    present = denominator > 0
    return 100.0 * f1.sum(axis=1) / present.sum(axis=1)


def paired_bootstrap(
    y_true: Sequence[Any],
    pred_a: Sequence[Any],
    pred_b: Sequence[Any],
    metric: str = "weighted_f1",
    samples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Paired bootstrap resampling (Koehn, 2004) of system B against system A.

    ``samples`` test sets of the same size are drawn with replacement
    (``numpy.random.default_rng(seed)``); the same draw scores both systems, and
    ``delta = metric(B) - metric(A)`` is recorded for each.

    Returns
    -------
    dict
        ``metric``, ``n`` (test size), ``samples``, ``seed``, ``alpha``; ``score_a``,
        ``score_b`` and ``difference`` (B - A) on the full test set; ``p_value``;
        ``p_value_worse``; ``significant`` (``p_value < alpha``); ``comparable``
        (``p_value_worse >= alpha``); ``ci_low``/``ci_high``: the percentile
        ``1 - alpha`` interval of ``delta``.

    Notes
    -----
    Both tests are one-sided, following Koehn (2004): B is better than A with confidence
    ``1 - p`` when B wins on a fraction ``1 - p`` of the resamples.

    * ``p_value`` = fraction of resamples with ``delta <= 0`` (B not better): small means
      "B is significantly better than A".
    * ``p_value_worse`` = fraction with ``delta >= 0`` (B not worse): small means "B is
      significantly worse than A".
    * ``comparable`` is True when B is not significantly worse than A at level ``alpha``.

    Ties count against the claim being tested, so identical systems give ``p_value = 1`` and
    ``p_value_worse = 1`` (not significant either way, comparable). The result depends only on
    the inputs and ``seed``.
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise InputError(f"samples must be a positive integer, got {samples!r}")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    y, a, b = _as_label_arrays(y_true, pred_a, pred_b)
    # One integer code per label, shared by the three arrays (labels compared as strings when
    # their types differ, e.g. str vs int).
    try:
        classes, codes = np.unique(np.concatenate([y, a, b]), return_inverse=True)
    except TypeError:
        classes, codes = np.unique(
            np.concatenate([y.astype(str), a.astype(str), b.astype(str)]), return_inverse=True
        )
    n = len(y)
    codes = codes.reshape(3, n)
    k = len(classes)
    full = np.arange(n)[None, :]
    score_a = float(_resampled_scores(codes[0], codes[1], k, full, metric)[0])
    score_b = float(_resampled_scores(codes[0], codes[2], k, full, metric)[0])

    rng = np.random.default_rng(seed)
    sign = -1.0 if metric == "error" else 1.0  # lower error is better
    deltas = np.empty(int(samples))
    chunk = max(1, min(int(samples), 4_000_000 // n))
    for start in range(0, int(samples), chunk):
        stop = min(int(samples), start + chunk)
        indices = rng.integers(0, n, size=(stop - start, n))
        score_ra = _resampled_scores(codes[0], codes[1], k, indices, metric)
        score_rb = _resampled_scores(codes[0], codes[2], k, indices, metric)
        deltas[start:stop] = sign * (score_rb - score_ra)
    deltas = np.round(deltas, 10)  # exact ties must count as ties despite rounding
    p_value = float(np.mean(deltas <= 0))
    p_value_worse = float(np.mean(deltas >= 0))
    low, high = np.percentile(sign * deltas, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {
        "metric": metric,
        "n": n,
        "samples": int(samples),
        "seed": seed,
        "alpha": alpha,
        "score_a": score_a,
        "score_b": score_b,
        "difference": score_b - score_a,
        "p_value": p_value,
        "p_value_worse": p_value_worse,
        "significant": p_value < alpha,
        "comparable": p_value_worse >= alpha,
        "ci_low": float(min(low, high)),
        "ci_high": float(max(low, high)),
    }


def read_predictions(
    path: str | os.PathLike[str], method: str | None = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """Read a predictions JSONL file: one ``{"id": ..., "label": ..., "prediction": ...}``
    object per line (``eft evaluate --predictions``; other keys ignored), or, with ``method``,
    that method's predictions in an ``eft bench`` predictions file (``{"test_labels": [...]}``
    then one ``{"method": ..., "predictions": [...]}`` per method). Returns ``(ids, y_true,
    y_pred)``; a missing ``id`` becomes the 0-based index of the example."""
    from eft.datasets import _read_table  # the JSONL reader with its input checks

    ids: list[Any] = []
    y_true: list[Any] = []
    y_pred: list[Any] = []
    rows = iter(_read_table(Path(path), kind="jsonl").rows)
    first = next(rows)  # the reader refuses an empty file
    if "test_labels" in first[1]:
        return _bench_predictions(path, first[1]["test_labels"], rows, method)
    if method is not None:
        raise InputError(
            f"{path} holds one model's predictions (`eft evaluate --predictions`); a method "
            f"({method!r}) is chosen in `eft bench` predictions files only: drop it."
        )
    for line_no, record in itertools.chain([first], rows):
        if "prediction" not in record:
            raise InputError(
                f"{path}: line {line_no} has no 'prediction' field; expected "
                '{"id": ..., "label": ..., "prediction": ...} objects'
            )
        if record.get("label") is None:
            raise InputError(
                f"{path}: line {line_no} has no true 'label'; significance tests need "
                "predictions made on labelled data"
            )
        ids.append(record.get("id", len(ids)))
        y_true.append(record["label"])
        y_pred.append(record["prediction"])
    keys = [json.dumps(i, sort_keys=True) for i in ids]
    if len(set(keys)) != len(keys):
        raise InputError(f"{path}: duplicate example ids; every line needs a distinct 'id'")
    return ids, y_true, y_pred


def _bench_predictions(
    path: str | os.PathLike[str], labels: Any, rows: Any, method: str | None
) -> tuple[list[Any], list[Any], list[Any]]:
    """``method``'s predictions in an ``eft bench`` predictions file, ids 0, 1, ... (the
    test set's order)."""
    methods: dict[str, Any] = {}
    for line_no, record in rows:
        if "method" not in record or not isinstance(record.get("predictions"), list):
            raise InputError(
                f"{path}: line {line_no} is not an `eft bench` method line "
                '({"method": ..., "predictions": [...]})'
            )
        methods[str(record["method"])] = record["predictions"]
    if method is None or method not in methods:
        what = "choose" if method is None else f"it has no method {method!r}; choose"
        raise InputError(
            f"{path} is an `eft bench` predictions file of several methods "
            f"({', '.join(methods)}): {what} one with --method-a/--method-b "
            "(Python: method_a=/method_b=)."
        )
    predictions = methods[method]
    if not isinstance(labels, list) or len(labels) != len(predictions):
        raise InputError(
            f"{path}: method {method!r} has {len(predictions)} predictions for "
            f"{len(labels) if isinstance(labels, list) else 'no list of'} test labels."
        )
    return list(range(len(labels))), labels, predictions


def is_label_set(label: Any) -> bool:
    """A multi-label row: a list, tuple, set, frozenset or 1-D array of labels."""
    return isinstance(label, (list, tuple, set, frozenset, np.ndarray))


def label_set_keys(labels: Sequence[Any]) -> list[Any]:
    """Labels as the paired bootstrap compares them: a label set (multi-label) as the JSON of
    its sorted labels, so that two orders of one set are equal; single labels unchanged."""
    return [json.dumps(sorted(map(str, y))) if is_label_set(y) else y for y in labels]


def compare_prediction_files(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str],
    metric: str = "weighted_f1",
    samples: int = 1000,
    seed: int = 0,
    method_a: str | None = None,
    method_b: str | None = None,
) -> dict[str, Any]:
    """Paired bootstrap of predictions file B against A (see :func:`paired_bootstrap`).

    Examples are matched by ``id`` (any line order); both files must hold the same ids with
    the same true labels, else :class:`InputError`. An ``eft bench`` predictions file holds
    every method's: ``method_a``/``method_b`` choose one (its ids are the test set's row
    numbers, as those of ``eft evaluate`` on the same file). The result adds ``file_a`` and
    ``file_b`` (and the methods chosen).
    """
    ids_a, true_a, pred_a = read_predictions(path_a, method_a)
    ids_b, true_b, pred_b = read_predictions(path_b, method_b)
    key_a = [json.dumps(i, sort_keys=True) for i in ids_a]
    key_b = {json.dumps(i, sort_keys=True): j for j, i in enumerate(ids_b)}
    missing_b = [ids_a[j] for j, key in enumerate(key_a) if key not in key_b]
    extra_b = len(set(key_b) - set(key_a))
    if missing_b or extra_b:
        raise InputError(
            f"{path_a} and {path_b} do not cover the same examples ({len(ids_a)} vs "
            f"{len(ids_b)} ids; {len(missing_b)} only in A, e.g. {missing_b[:3]}, {extra_b} only "
            "in B); predict on the same test set"
        )
    if metric != "accuracy" and any(isinstance(y, list) for y in true_a + pred_a + pred_b):
        raise InputError(
            f"{path_a} or {path_b} holds label lists (multi-label predictions); the paired "
            f"bootstrap compares them by subset accuracy only: use --metric accuracy, not "
            f"{metric}"
        )
    order = [key_b[key] for key in key_a]
    # compared as strings; label sets as their sorted labels (either order of a set is equal)
    true_a, pred_a, true_b, pred_b = (
        [str(y) for y in label_set_keys(labels)] for labels in (true_a, pred_a, true_b, pred_b)
    )
    true_b_aligned = [true_b[j] for j in order]
    mismatched = [
        ids_a[j] for j, (x, y) in enumerate(zip(true_a, true_b_aligned, strict=True)) if x != y
    ]
    if mismatched:
        raise InputError(
            f"{path_a} and {path_b} disagree on the true label of {len(mismatched)} example(s), "
            f"e.g. id {mismatched[0]!r}; they must come from the same labelled test set"
        )
    result = paired_bootstrap(
        true_a,
        pred_a,
        [pred_b[j] for j in order],
        metric=metric,
        samples=samples,
        seed=seed,
    )
    result.update(file_a=str(path_a), file_b=str(path_b))
    result.update({k: v for k, v in (("method_a", method_a), ("method_b", method_b)) if v})
    return result
