"""Scores, mean/std over seeds and the paired bootstrap test (paper 4.3, Koehn 2004)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from eft.errors import InputError
from eft.metrics import (
    METRICS,
    _resampled_scores,
    classification_scores,
    compare_prediction_files,
    label_set_keys,
    mean_std,
    multi_label_scores,
    paired_bootstrap,
    per_label_scores,
    read_predictions,
)

LABELS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]


def _noisy(y: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) > accuracy
    return np.where(wrong, rng.integers(0, 7, len(y)), y)


def test_classification_scores():
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "b", "b", "b", "a"]
    scores = classification_scores(y_true, y_pred)
    assert set(scores) == set(METRICS)
    assert scores["accuracy"] == pytest.approx(60.0)
    assert scores["error"] == pytest.approx(40.0)
    assert scores["weighted_f1"] == pytest.approx(
        100 * f1_score(y_true, y_pred, average="weighted")
    )
    assert scores["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)  # c: F1 0
    assert classification_scores([1, 2], [1, 2])["weighted_f1"] == 100.0
    with pytest.raises(InputError, match="different lengths"):
        classification_scores([1, 2], [1])
    with pytest.raises(InputError, match="empty"):
        classification_scores([], [])


def test_multi_label_scores_by_hand():
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    y_pred = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]])
    scores = multi_label_scores(y_true, y_pred)
    assert scores["subset_accuracy"] == scores["accuracy"] == pytest.approx(50.0)  # rows 0, 3
    assert scores["hamming_loss"] == pytest.approx(100 * 2 / 12)
    # micro: tp 4, fp 1, fn 1 -> F1 = 8 / 10
    assert scores["micro_f1"] == pytest.approx(80.0)
    # per label F1: a 1, b 2/3 (tp 1, fn 1), c 2/3 (tp 1, fp 1)
    assert scores["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)
    per_label = per_label_scores(y_true, y_pred, ["a", "b", "c"])
    assert per_label["b"] == pytest.approx(
        {"precision": 100.0, "recall": 50.0, "f1": 100 * 2 / 3, "support": 2}
    )
    with pytest.raises(InputError, match="one shape"):
        multi_label_scores(y_true, y_pred[:, :2])


def test_mean_std():
    assert mean_std([64.0, 65.0, 66.0]) == (65.0, 1.0)
    assert mean_std([70.5]) == (70.5, 0.0)
    with pytest.raises(InputError):
        mean_std([])


@pytest.mark.parametrize("metric,average", [("weighted_f1", "weighted"), ("macro_f1", "macro")])
def test_fast_f1_matches_sklearn(metric, average):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 400)
    pred = _noisy(y, 0.5, seed=4)
    y[:3] = 6  # a rare class that some resamples miss
    indices = rng.integers(0, 400, size=(30, 400))
    fast = _resampled_scores(y, pred, 7, indices, metric)
    slow = [100 * f1_score(y[i], pred[i], average=average, zero_division=0) for i in indices]
    np.testing.assert_allclose(fast, slow, atol=1e-9)


def test_identical_predictions_not_significant():
    y = np.random.default_rng(0).integers(0, 7, 500)
    pred = _noisy(y, 0.6, seed=1)
    result = paired_bootstrap(y, pred, pred.copy(), samples=300)
    assert result["difference"] == 0.0
    assert result["p_value"] > 0.4 and result["p_value_worse"] > 0.4
    assert result["comparable"] and not result["significant"]


def test_clearly_better_b():
    y = np.random.default_rng(0).integers(0, 7, 300)
    worse, better = _noisy(y, 0.5, seed=1), _noisy(y, 0.8, seed=2)
    result = paired_bootstrap(y, worse, better, metric="weighted_f1", samples=1000, seed=5)
    assert result["difference"] > 10
    assert result["p_value"] < 0.05 and result["significant"] and result["comparable"]
    assert result["ci_low"] > 0
    reverse = paired_bootstrap(y, better, worse, samples=1000, seed=5)
    assert reverse["p_value"] > 0.95 and reverse["p_value_worse"] < 0.05
    assert not reverse["comparable"]
    # error: lower is better, so B (fewer errors) is still the significant winner
    error = paired_bootstrap(y, worse, better, metric="error", samples=500)
    assert error["difference"] < 0 and error["p_value"] < 0.05


def test_small_difference_comparable():
    y = np.random.default_rng(0).integers(0, 7, 400)
    a = _noisy(y, 0.7, seed=1)
    b = a.copy()
    wrong = np.flatnonzero(b == y)[:3]
    b[wrong] = (y[wrong] + 1) % 7  # B loses 3 of 400
    result = paired_bootstrap(y, a, b, metric="accuracy", samples=1000)
    assert result["difference"] == pytest.approx(-0.75)
    assert not result["significant"]


def test_reproducible_with_seed():
    y = np.random.default_rng(0).integers(0, 7, 300)
    a, b = _noisy(y, 0.6, seed=1), _noisy(y, 0.62, seed=2)
    first = paired_bootstrap(y, a, b, samples=500, seed=11)
    assert paired_bootstrap(list(y), list(a), list(b), samples=500, seed=11) == first
    other = paired_bootstrap(y, a, b, samples=500, seed=12)
    assert other["score_a"] == first["score_a"] and other["p_value"] != first["p_value"]


def test_string_labels_and_errors():
    y = ["joy", "fear", "joy", "anger"] * 25
    result = paired_bootstrap(y, y, ["joy"] * 100, metric="accuracy", samples=200)
    assert result["score_a"] == 100.0 and result["score_b"] == 50.0
    with pytest.raises(InputError, match="different lengths"):
        paired_bootstrap([1, 2, 3], [1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="unknown metric 'f2'"):
        paired_bootstrap([1], [1], [1], metric="f2")
    with pytest.raises(InputError, match="samples must be a positive integer"):
        paired_bootstrap([1], [1], [1], samples=0)


def test_bootstrap_speed_meld_test_size():
    y = np.random.default_rng(0).integers(0, 7, 2610)
    a, b = _noisy(y, 0.6, seed=1), _noisy(y, 0.62, seed=2)
    start = time.perf_counter()
    paired_bootstrap(y, a, b, metric="weighted_f1", samples=1000)
    assert time.perf_counter() - start < 5.0


def _write_predictions(path, ids, y_true, y_pred):
    with open(path, "w", encoding="utf-8") as handle:
        for i, t, p in zip(ids, y_true, y_pred, strict=True):
            handle.write(json.dumps({"id": i, "label": t, "prediction": p, "score": 0.5}) + "\n")


def test_prediction_files(tmp_path):
    rng = np.random.default_rng(0)
    y = [LABELS[k] for k in rng.integers(0, 7, 200)]
    a = [LABELS[k] for k in _noisy(np.array([LABELS.index(v) for v in y]), 0.5, seed=1)]
    b = [LABELS[k] for k in _noisy(np.array([LABELS.index(v) for v in y]), 0.9, seed=2)]
    ids = list(range(200))
    _write_predictions(tmp_path / "a.jsonl", ids, y, a)
    order = rng.permutation(200)  # B in another line order: matched by id
    _write_predictions(
        tmp_path / "b.jsonl", [ids[i] for i in order], [y[i] for i in order], [b[i] for i in order]
    )
    assert read_predictions(tmp_path / "a.jsonl") == (ids, y, a)
    result = compare_prediction_files(tmp_path / "a.jsonl", tmp_path / "b.jsonl", samples=300)
    assert result == {
        **paired_bootstrap(y, a, b, samples=300),
        "file_a": str(tmp_path / "a.jsonl"),
        "file_b": str(tmp_path / "b.jsonl"),
    }
    assert result["p_value"] < 0.05

    _write_predictions(tmp_path / "short.jsonl", ids[:150], y[:150], b[:150])
    with pytest.raises(InputError, match="do not cover the same examples"):
        compare_prediction_files(tmp_path / "a.jsonl", tmp_path / "short.jsonl")
    relabeled = list(y)
    relabeled[7] = "joy" if y[7] != "joy" else "fear"
    _write_predictions(tmp_path / "other.jsonl", ids, relabeled, b)
    with pytest.raises(InputError, match="disagree on the true label of 1 example.*id 7"):
        compare_prediction_files(tmp_path / "a.jsonl", tmp_path / "other.jsonl")


def test_compare_reads_a_bench_predictions_file_by_method(tmp_path, capsys):
    """eft bench keeps every method's test predictions in one file; compare picks a method
    from it, against another method or an `eft evaluate` file on the same test set."""
    from eft.benchmark import write_predictions
    from eft.cli import main

    rng = np.random.default_rng(0)
    y = [LABELS[k] for k in rng.integers(0, 7, 200)]
    bp, eft = (
        [LABELS[k] for k in _noisy(np.array([LABELS.index(v) for v in y]), rate, seed=seed)]
        for rate, seed in ((0.9, 1), (0.6, 2))
    )
    bench = write_predictions(tmp_path / "bench_x_predictions.jsonl", y, {"bp": bp, "eft": eft})
    _write_predictions(tmp_path / "evaluate.jsonl", list(range(200)), y, eft)
    result = compare_prediction_files(bench, bench, "accuracy", 300, 0, "bp", "eft")
    assert {k: v for k, v in result.items() if k.startswith("p_")} == {
        k: v for k, v in paired_bootstrap(y, bp, eft, "accuracy", 300).items() if k.startswith("p_")
    }
    assert (result["method_a"], result["method_b"]) == ("bp", "eft")
    mixed = compare_prediction_files(bench, tmp_path / "evaluate.jsonl", "accuracy", 300, 0, "eft")
    assert mixed["difference"] == 0.0  # the same predictions, matched by row number
    for argv, message in (
        ([str(bench), str(bench)], "several methods (bp, eft): choose one with --method-a"),
        ([str(bench), str(bench), "--method-a", "bp", "--method-b", "fused"], "no method 'fused'"),
        (
            [str(tmp_path / "evaluate.jsonl"), str(bench), "--method-a", "bp"],
            "holds one model's predictions (`eft evaluate --predictions`)",
        ),
    ):
        assert main(["compare", *argv, "--metric", "accuracy"]) == 2
        assert message in capsys.readouterr().err
    argv = ["compare", str(bench), str(bench), "--method-a", "bp", "--method-b", "eft"]
    assert main([*argv, "--metric", "accuracy"]) == 0
    gain = 100 * (np.mean(np.array(eft) == y) - np.mean(np.array(bp) == y))
    assert f"difference {gain:+.2f}" in capsys.readouterr().out


def test_read_predictions_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "none.jsonl")
    (tmp_path / "p.jsonl").write_text('{"id": 1, "label": "a"}\n')
    with pytest.raises(InputError, match="line 1 has no 'prediction'"):
        read_predictions(tmp_path / "p.jsonl")
    (tmp_path / "p.jsonl").write_text('{"id": 1, "prediction": "a"}\n')
    with pytest.raises(InputError, match="no true 'label'"):
        read_predictions(tmp_path / "p.jsonl")
    (tmp_path / "p.jsonl").write_text('{"id": 1, "label": "a", "prediction": "a"}\n{oops\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        read_predictions(tmp_path / "p.jsonl")
    line = '{"id": 1, "label": "a", "prediction": "a"}\n'
    (tmp_path / "p.jsonl").write_text(line * 2)
    with pytest.raises(InputError, match="duplicate example ids"):
        read_predictions(tmp_path / "p.jsonl")
    (tmp_path / "p.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_predictions(tmp_path / "p.jsonl")


def test_per_class_scores_match_sklearns_report():
    from sklearn.metrics import classification_report

    from eft.metrics import per_class_scores

    truth = ["joy", "anger", "joy", "neutral", "joy", "anger", "fear"]
    predicted = ["joy", "joy", "joy", "neutral", "anger", "anger", "joy"]
    scores = per_class_scores(truth, predicted)
    report = classification_report(truth, predicted, output_dict=True, zero_division=0)
    assert set(scores) == {"anger", "fear", "joy", "neutral"}
    for label, row in scores.items():
        assert row["precision"] == pytest.approx(100 * report[label]["precision"])
        assert row["recall"] == pytest.approx(100 * report[label]["recall"])
        assert row["f1"] == pytest.approx(100 * report[label]["f1-score"])
        assert row["support"] == report[label]["support"]
    assert scores["fear"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert list(per_class_scores([1, 0, 1], [1, 1, 1])) == ["0", "1"]  # keys are strings
    # given labels: in their order, one absent from both lists listed with support 0
    listed = per_class_scores(truth, predicted, labels=["neutral", "joy", "surprise"])
    assert list(listed) == ["neutral", "joy", "surprise"]
    assert listed["joy"] == scores["joy"]
    assert listed["surprise"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_label_sets_are_compared_as_sets_whatever_their_order(tmp_path):
    """A predictions file written by another tool may list a text's labels in another order:
    ["b", "a"] is the set ["a", "b"], for the true labels and the predictions alike."""
    truth = [["a", "b"], ["a"], [], ["b"]] * 10
    a = [["a", "b"], ["b"], [], ["b"]] * 10  # wrong on the second text of four
    b = [["b", "a"], ["a"], ["a"], ["b"]] * 10  # right but for the third; "b", "a" is right
    ids = list(range(40))
    _write_predictions(tmp_path / "a.jsonl", ids, truth, a)
    _write_predictions(tmp_path / "b.jsonl", ids, [list(reversed(y)) for y in truth], b)
    result = compare_prediction_files(
        tmp_path / "a.jsonl", tmp_path / "b.jsonl", metric="accuracy", samples=200
    )
    assert result["score_a"] == pytest.approx(75.0) and result["score_b"] == pytest.approx(75.0)
    assert label_set_keys([["b", "a"], "x", 3]) == ['["a", "b"]', "x", 3]
