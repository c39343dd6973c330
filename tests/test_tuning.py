"""The one-run tuning protocol (eft.tuning, `eft tune`)."""

from __future__ import annotations

import json

import numpy as np

from eft import EFTClassifier, EFTConfig
from eft.tuning import tune, write_tuning
from tests.test_classifier import LABELS, TEXTS, _config
from tests.test_cli import _write_csv, run_eft


def test_tune_reports_every_epoch_and_a_reproducible_choice(tiny_bert_dir, tmp_path):
    config = _config(tiny_bert_dir, learning_rate=1e-3)
    result = tune(
        TEXTS,
        LABELS,
        TEXTS[:16],
        LABELS[:16],
        config,
        max_epochs=3,
        n_hidden=[8, 16, 32],
        C=[0.1, 10.0],
    )
    assert 1 <= len(result.epochs) <= 3
    for epoch in result.epochs:
        assert len(epoch["table"]) == 6
        assert epoch["best_score"] == max(r["accuracy"] for r in epoch["table"])
    scores = [e["best_score"] for e in result.epochs]
    k = result.best_config.bp_epochs
    assert result.best_score == scores[k - 1] == max(scores)
    if len(scores) < 3:  # stopped early: the last epoch dropped
        assert scores[-1] < max(scores[:-1])
    assert result.best_config.method == "eft" and result.best_config.lr_schedule == "constant"
    out = write_tuning(result, tmp_path / "tuning")
    saved = json.loads((out / "tuned_config.json").read_text())
    again = EFTConfig.from_dict(saved["config"])
    assert (again.bp_epochs, again.n_hidden, again.C) == (
        k,
        result.best_config.n_hidden,
        result.best_config.C,
    )
    assert (out / "tuning.png").stat().st_size > 0
    # `eft train --config` reproduces the tuned encoder: the tuner's epoch-by-epoch resumed BP
    # stage (method "bp", constant rate) equals one uninterrupted BP stage of k epochs
    trained = EFTClassifier(again).fit(TEXTS, LABELS)
    plain_bp = EFTClassifier(EFTConfig.from_dict({**saved["config"], "method": "bp"}))
    plain_bp.fit(TEXTS, LABELS)
    np.testing.assert_allclose(
        trained.features(TEXTS), plain_bp.features(TEXTS), rtol=1e-5, atol=1e-6
    )
    assert trained.score(TEXTS[:16], LABELS[:16]) >= 0.5


def test_tune_command(tiny_bert_dir, tmp_path):
    rows = list(zip(TEXTS, LABELS, strict=True))
    train = _write_csv(tmp_path / "train.csv", rows)
    dev = _write_csv(tmp_path / "dev.csv", rows[:16])
    result = run_eft(
        "tune",
        "--train",
        str(train),
        "--validation",
        str(dev),
        "--model",
        str(tiny_bert_dir),
        "--max-epochs",
        "2",
        "--grid-n-hidden",
        "8,16",
        "--grid-C",
        "1,10",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "t"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "chosen: bp_epochs=" in result.stdout
    config = json.loads((tmp_path / "t" / "tuned_config.json").read_text())["config"]
    assert config["n_hidden"] in (8, 16) and config["C"] in (1.0, 10.0)
    assert np.isfinite(json.loads((tmp_path / "t" / "tuning.json").read_text())["best_score"])
