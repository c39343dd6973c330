"""The one-run tuning protocol (eft.tuning, `eft tune`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eft import EFTClassifier, EFTConfig
from eft.errors import InputError
from eft.tuning import choose_epoch, choose_head, tune, write_tuning
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
    assert result.best_config.method == "eft"
    assert result.best_config.lr_schedule == "linear_per_epoch"
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
    # stage (method "bp", rate restarting every epoch) equals one uninterrupted BP stage of k
    # epochs
    trained = EFTClassifier(again).fit(TEXTS, LABELS)
    plain_bp = EFTClassifier(EFTConfig.from_dict({**saved["config"], "method": "bp"}))
    plain_bp.fit(TEXTS, LABELS)
    np.testing.assert_allclose(
        trained.features(TEXTS), plain_bp.features(TEXTS), rtol=1e-5, atol=1e-6
    )
    assert trained.score(TEXTS[:16], LABELS[:16]) >= 0.5


def test_per_epoch_schedule_restarts_at_the_peak_every_epoch(tiny_bert_dir):
    import torch

    from eft.backprop import _schedule

    def rates(schedule: str, epochs: int, warmup_ratio: float = 0.0) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        config = EFTConfig(lr_schedule=schedule, warmup_ratio=warmup_ratio)
        scheduler = _schedule(optimizer, config, 4 * epochs, 4)
        out = []
        for _ in range(4 * epochs):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    assert rates("linear_per_epoch", 3) == [1.0, 0.75, 0.5, 0.25] * 3
    assert rates("linear", 1) == [1.0, 0.75, 0.5, 0.25]  # one epoch: the same schedule
    assert rates("constant", 2) == [1.0] * 8
    # warm-up: within every epoch per epoch (so tuning with warm-up is reproducible), once
    # over the run otherwise; with one epoch both are the same again
    assert rates("linear_per_epoch", 2, 0.5) == [0.5, 1.0, 1.0, 0.5] * 2
    assert rates("linear", 2, 0.25) == [0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    assert rates("linear", 1, 0.5) == rates("linear_per_epoch", 1, 0.5)
    # so with k = 1 the tuner's schedule trains the same encoder as the default one
    one_epoch = [
        EFTClassifier(_config(tiny_bert_dir, lr_schedule=s, bp_epochs=1)).fit(TEXTS, LABELS)
        for s in ("linear", "linear_per_epoch")
    ]
    np.testing.assert_array_equal(one_epoch[0].features(TEXTS), one_epoch[1].features(TEXTS))


def test_epochs_resumed_one_at_a_time_with_warm_up_equal_one_run(tiny_bert_dir, tmp_path):
    # what the tuner does (a k-epoch run resumed from the (k-1)-epoch checkpoint) gives the
    # encoder of one uninterrupted k-epoch run, warm-up included, so tuning with warm-up is
    # reproducible by `eft train --config`
    def config(k: int, **extra) -> EFTConfig:
        return _config(
            tiny_bert_dir,
            method="bp",
            bp_epochs=k,
            learning_rate=1e-3,
            warmup_ratio=0.5,
            lr_schedule="linear_per_epoch",
            **extra,
        )

    checkpoint = tmp_path / "checkpoint"
    EFTClassifier(config(1, checkpoint_dir=str(checkpoint))).fit(TEXTS, LABELS)
    resumed = EFTClassifier(config(2, checkpoint_dir=str(checkpoint)))
    resumed.fit(TEXTS, LABELS, resume_from=checkpoint)
    one_run = EFTClassifier(config(2)).fit(TEXTS, LABELS)
    np.testing.assert_allclose(
        resumed.features(TEXTS), one_run.features(TEXTS), rtol=1e-5, atol=1e-6
    )
    one_epoch = EFTClassifier(config(1)).fit(TEXTS, LABELS)
    assert np.abs(one_run.features(TEXTS) - one_epoch.features(TEXTS)).max() > 1e-3


def test_tune_on_label_sets_scores_subset_accuracy(tiny_bert_dir, tmp_path):
    from tests.test_classifier import _multi_label_config, _multi_label_data

    texts, labels = _multi_label_data()
    # tune_thresholds is the tuned model's (its fit has validation data); the tuner's BP runs
    # have none, and refused it
    config = _multi_label_config(tiny_bert_dir, tune_thresholds=True)
    result = tune(
        texts[:240],
        labels[:240],
        texts[240:],
        labels[240:],
        config,
        max_epochs=2,
        n_hidden=[100, 500],
        C=[10.0, 100.0],
    )
    for epoch in result.epochs:  # subset accuracies: 1/8 by chance with 3 labels
        assert epoch["best_score"] == max(r["accuracy"] for r in epoch["table"]) > 0.5
        assert 0 <= epoch["linear_head_accuracy"] <= 1
    assert result.best_config.tune_thresholds is True
    tuned = EFTClassifier(result.best_config).fit(
        texts[:240], labels[:240], texts[240:], labels[240:]
    )
    assert tuned.multi_label_ and tuned.score(texts[240:], labels[240:]) > 0.5
    with pytest.raises(InputError, match="validation labels are one label per text"):
        tune(texts, labels, texts[:2], ["war", "money"], config)
    # the command: JSON label lists with --multi-label
    train = tmp_path / "train.jsonl"
    rows = zip(texts[:240], labels[:240], strict=True)
    train.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    dev = _write_csv(
        tmp_path / "dev.csv", [(t, ",".join(y)) for t, y in zip(texts, labels, strict=True)][240:]
    )
    result = run_eft(
        "tune",
        "--train",
        str(train),
        "--validation",
        str(dev),
        "--multi-label",
        "--model",
        str(tiny_bert_dir),
        "--max-epochs",
        "1",
        "--grid-n-hidden",
        "500",
        "--grid-C",
        "100",
        "--learning-rate",
        "1e-3",
        "--device",
        "cpu",
        "--quiet",
        "--output",
        str(tmp_path / "t"),
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "t" / "tuned_config.json").read_text())["config"]
    assert (saved["bp_epochs"], saved["n_hidden"], saved["C"]) == (1, 500, 100.0)


def test_tune_explores_the_bp_recipe_and_head_variants(tiny_bert_dir, tmp_path, monkeypatch):
    config = _config(tiny_bert_dir, learning_rate=1e-3)
    result = tune(
        TEXTS,
        LABELS,
        TEXTS[:16],
        LABELS[:16],
        config,
        max_epochs=2,
        n_hidden=[8, 16],
        C=[0.1, 10.0],
        learning_rates=[1e-3, 3e-3],
        poolings=["cls", "mean"],
        activations=["leaky_relu", "tanh"],
        standardize=[False, True],
    )
    runs = {(e["learning_rate"], e["pooling"]) for e in result.epochs}
    assert runs == {(1e-3, "cls"), (1e-3, "mean"), (3e-3, "cls"), (3e-3, "mean")}
    for epoch in result.epochs:
        # every head variant x n_hidden x C on the same features
        heads = {(r["activation"], r["standardize"]) for r in epoch["table"]}
        assert heads == {
            ("leaky_relu", False),
            ("leaky_relu", True),
            ("tanh", False),
            ("tanh", True),
        }
        assert len(epoch["table"]) == 4 * 2 * 2
        assert epoch["best_score"] == max(r["accuracy"] for r in epoch["table"])
        params = epoch["best_params"]
        assert (params["learning_rate"], params["pooling"]) == (
            epoch["learning_rate"],
            epoch["pooling"],
        )
        assert any(
            (r["activation"], r["standardize"], r["n_hidden"], r["C"], r["accuracy"])
            == (
                params["activation"],
                params["standardize"],
                params["n_hidden"],
                params["C"],
                epoch["best_score"],
            )
            for r in epoch["table"]
        )
    best = result.best_config
    assert result.best_score == max(e["best_score"] for e in result.epochs)
    winner = next(  # the first row reaching the best score (ties keep the earlier candidate)
        e for e in result.epochs if e["best_score"] == result.best_score
    )
    assert (best.learning_rate, best.pooling, best.bp_epochs) == (
        winner["learning_rate"],
        winner["pooling"],
        winner["epoch"],
    )
    assert (best.activation, best.standardize, best.n_hidden, best.C) == (
        winner["best_params"]["activation"],
        winner["best_params"]["standardize"],
        winner["best_params"]["n_hidden"],
        winner["best_params"]["C"],
    )
    saved = result.to_dict()
    assert saved["best"]["learning_rate"] == best.learning_rate
    out = write_tuning(result, tmp_path / "tuning")
    assert EFTConfig.from_json(out / "tuned_config.json") == best
    assert (out / "tuning.png").stat().st_size > 0
    # written again into the same folder and interrupted after tuning.json: no
    # tuned_config.json is left beside another run's files
    import eft.tuning

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eft.tuning, "_plot_tuning", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_tuning(result, out)
    assert (out / "tuning.json").is_file() and not (out / "tuned_config.json").exists()


def test_tune_rejects_bad_grid_values_before_training(tiny_bert_dir, monkeypatch):
    import eft.tuning

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the grid")

    monkeypatch.setattr(eft.tuning, "_tune_bp_run", no_training)
    config = _config(tiny_bert_dir)
    bad = [
        ({"activations": ["leaky_relu", "swish"]}, "swish"),
        ({"poolings": ["cls", "max"]}, "pooling"),
        ({"learning_rates": [1e-4, -1.0]}, "learning_rate"),
        ({"standardize": ["yes"]}, "standardize"),
        ({"activations": []}, "at least one"),
        ({"n_hidden": [0, 8]}, "n_hidden values must be integers >= 1"),
        ({"C": [0.0, 1.0]}, "C values must be finite and > 0"),
        ({"scoring": "macro_f1"}, "scoring must be 'accuracy' or 'weighted_f1'"),
    ]
    for options, message in bad:
        with pytest.raises(InputError, match=message):
            tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], config, **options)
    fused = config.replace(elm_from_last_epoch=True)  # scored unfused: not the config it wrote
    with pytest.raises(InputError, match="tune without elm_from_last_epoch \\(--fused\\)"):
        tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], fused)


def _row(epoch: int, score: float, lr: float = 2e-4) -> dict:
    params = {"learning_rate": lr, "pooling": "cls", "activation": "leaky_relu"}
    head = {"activation": "leaky_relu", "standardize": False, "C": 1.0}
    # the best head at n_hidden 1000 * epoch; smaller heads 1 and 10 points worse
    table = [
        {**head, "n_hidden": 1000 * epoch, "accuracy": score},
        {**head, "n_hidden": 100 * epoch, "accuracy": score - 0.1},
        {**head, "n_hidden": 500 * epoch, "C": 10.0, "accuracy": score - 0.01},
        {**head, "n_hidden": 500 * epoch, "accuracy": score - 0.01},
    ]
    return {
        "learning_rate": lr,
        "pooling": "cls",
        "epoch": epoch,
        "best_score": score,
        "best_params": {**params, "standardize": False, "n_hidden": 1000 * epoch, "C": 1.0},
        "table": table,
    }


def test_one_standard_error_rule_takes_the_fewest_epochs_within_noise():
    # TREC-like: 545 validation questions; k = 3 is best by 1.3 points (SE 0.98 points)
    rows = [_row(1, 0.932), _row(2, 0.936), _row(3, 0.945), _row(4, 0.934)]
    best, se = choose_epoch(rows, 545, "best")
    assert best["epoch"] == 3 and se == pytest.approx(np.sqrt(0.945 * 0.055 / 545), rel=0.03)
    chosen, _ = choose_epoch(rows, 545, "one_se")
    assert chosen["epoch"] == 2  # 0.936 >= 0.945 - 0.0100; 0.932 is not
    assert choose_epoch(rows, 50, "one_se")[0]["epoch"] == 1  # smaller set, larger SE
    assert choose_epoch(rows, 10**6, "one_se")[0]["epoch"] == 3  # no noise: the best
    # two BP runs: the fewest epochs first, then the higher score, then the earlier row
    runs = [_row(1, 0.90), _row(2, 0.93), _row(1, 0.92, lr=5e-5), _row(2, 0.91, lr=5e-5)]
    chosen, _ = choose_epoch(runs, 100, "one_se")
    assert (chosen["epoch"], chosen["learning_rate"]) == (1, 5e-5)
    tied = [_row(1, 0.9), _row(1, 0.9, lr=5e-5)]
    assert choose_epoch(tied, 100, "one_se")[0]["learning_rate"] == 2e-4
    # one_se_head keeps the paper's epoch; the rule applies to its head only
    assert choose_epoch(rows, 545, "one_se_head") == (best, se)
    # one_se_epoch applies it to the epoch only: the same k as one_se
    assert choose_epoch(rows, 545, "one_se_epoch")[0]["epoch"] == 2
    assert choose_epoch(runs, 100, "one_se_epoch")[0]["learning_rate"] == 5e-5


def test_choose_head_takes_the_smallest_n_hidden_that_reaches_the_threshold():
    row = _row(2, 0.9)
    score, params = choose_head(row, "accuracy", 0.9 - 0.015)
    # n_hidden 1000 is 1 point worse than 2000 (within 1.5), 200 is 10 worse; the earlier C
    assert (score, params["n_hidden"], params["C"]) == (0.89, 1000, 10.0)
    assert params["learning_rate"] == 2e-4 and params["activation"] == "leaky_relu"
    assert choose_head(row, "accuracy", 0.9 - 0.005)[1]["n_hidden"] == 2000  # only the best
    assert choose_head(row, "accuracy", 0.0)[1]["n_hidden"] == 200
    with pytest.raises(ValueError, match="No head"):
        choose_head(row, "accuracy", 0.95)


def test_tune_selection_sets_the_chosen_config(tiny_bert_dir, monkeypatch):
    import eft.tuning

    curve = [_row(1, 0.80), _row(2, 0.82), _row(3, 0.79)]
    monkeypatch.setattr(eft.tuning, "_tune_bp_run", lambda *args: iter(curve))
    config = _config(tiny_bert_dir)
    paper = tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], config)
    assert paper.best_config.bp_epochs == 2 and paper.best_config.n_hidden == 2000
    assert paper.best_score == 0.82 and paper.to_dict()["selection"] == "best"
    fast = tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], config, selection="one_se")
    # SE 0.096 at n = 16: k = 1 (0.80 >= 0.82 - 0.096), then its smallest head within reach
    assert fast.standard_error == pytest.approx(0.096, abs=1e-3)
    assert fast.best_config.bp_epochs == 1 and fast.best_config.n_hidden == 500
    assert fast.best_config.C == 10.0 and fast.best_score == pytest.approx(0.79)
    assert fast.to_dict()["selection"] == "one_se"
    # the paper's k = 2, then its smallest head within one SE of 0.82 (n_hidden 1000, C 10)
    head = tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], config, selection="one_se_head")
    assert head.best_config.bp_epochs == 2 and head.best_config.n_hidden == 1000
    assert head.best_config.C == 10.0 and head.best_score == pytest.approx(0.81)
    assert head.to_dict()["selection"] == "one_se_head"
    # one_se's k = 1, then the best head of that epoch (n_hidden 1000, C 1: 0.80), not 500
    epoch = tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], config, selection="one_se_epoch")
    assert epoch.best_config.bp_epochs == 1 and epoch.best_config.n_hidden == 1000
    assert epoch.best_config.C == 1.0 and epoch.best_score == pytest.approx(0.80)
    assert epoch.to_dict()["selection"] == "one_se_epoch"
    with pytest.raises(InputError, match="selection"):
        tune(TEXTS, LABELS, TEXTS[:16], LABELS[:16], config, selection="fastest")


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
        "--grid-learning-rate",
        "5e-4,1e-3",
        "--grid-standardize",
        "no,yes",
        "--device",
        "cpu",
        "--selection",
        "one_se",
        "--output",
        str(tmp_path / "t"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "chosen: learning_rate=" in result.stdout
    header = next(line for line in result.stdout.splitlines() if "linear head" in line)
    assert header.rstrip().endswith("BP epoch s")  # each epoch's seconds, to weigh k by
    assert "one-standard-error rule" in result.stdout
    config = json.loads((tmp_path / "t" / "tuned_config.json").read_text())["config"]
    assert config["n_hidden"] in (8, 16) and config["C"] in (1.0, 10.0)
    assert config["learning_rate"] in (5e-4, 1e-3) and config["standardize"] in (False, True)
    tuning = json.loads((tmp_path / "t" / "tuning.json").read_text())
    assert tuning["selection"] == "one_se" and 0 < tuning["standard_error"] < 0.2  # n = 16
    rows = tuning["epochs"]
    assert {r["learning_rate"] for r in rows} == {5e-4, 1e-3}
    assert {r["standardize"] for r in rows[0]["table"]} == {False, True}
    assert not (tmp_path / "t.checkpoint").exists()  # kept only while unfinished
    bad = run_eft(
        "tune",
        "--train",
        str(train),
        "--validation",
        str(dev),
        "--model",
        str(tiny_bert_dir),
        "--grid-standardize",
        "maybe",
        "--output",
        str(tmp_path / "bad"),
    )
    assert bad.returncode != 0 and "--grid-standardize takes no,yes" in bad.stderr
    assert np.isfinite(json.loads((tmp_path / "t" / "tuning.json").read_text())["best_score"])


def _stop_at_epoch(monkeypatch, stop_k: int) -> list[int]:
    """Make the tuner's epoch `stop_k` raise KeyboardInterrupt (a user's Ctrl-C); returns the
    list of epochs that were trained and scored."""
    import eft.tuning

    real = eft.tuning._tune_epoch
    trained: list[int] = []

    def epoch(data, recipe, heads, grid, k, checkpoint):
        if k == stop_k:
            raise KeyboardInterrupt
        trained.append(k)
        return real(data, recipe, heads, grid, k, checkpoint)

    monkeypatch.setattr(eft.tuning, "_tune_epoch", epoch)
    return trained


def test_interrupted_tuning_continues_to_the_same_rows(tiny_bert_dir, tmp_path, monkeypatch):
    config = _config(tiny_bert_dir, learning_rate=1e-3)
    search = dict(max_epochs=3, n_hidden=[8, 16], C=[0.1, 10.0], learning_rates=[1e-3, 5e-4])
    data = (TEXTS, LABELS, TEXTS[:16], LABELS[:16])
    uninterrupted = tune(*data, config, **search)

    checkpoint = tmp_path / "tuning.checkpoint"
    first = _stop_at_epoch(monkeypatch, stop_k=2)
    with pytest.raises(KeyboardInterrupt):
        tune(*data, config, **search, checkpoint_dir=checkpoint)
    assert first == [1]
    assert (checkpoint / "checkpoint-0" / "checkpoint.json").is_file()  # the encoder at k = 1
    monkeypatch.undo()
    second = _stop_at_epoch(monkeypatch, stop_k=0)  # counts the epochs trained, stops none
    told: list[int] = []
    # with other options the run is refused before being announced as continued
    with pytest.raises(InputError, match="other data or options"):
        tune(*data, config, max_epochs=3, checkpoint_dir=checkpoint, on_continue=told.append)
    assert told == []
    resumed = tune(*data, config, **search, checkpoint_dir=checkpoint, on_continue=told.append)
    assert told == [1]  # the finished rows, once its fingerprint is this run's
    assert second[0] == 2  # epoch 1 was not trained again
    assert len(second) == len(uninterrupted.epochs) - 1

    def comparable(rows):  # everything but the seconds
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert comparable(resumed.epochs) == comparable(uninterrupted.epochs)  # exactly
    assert resumed.best_config == uninterrupted.best_config
    assert not any(p.name.startswith("checkpoint-") for p in checkpoint.iterdir())

    # the same folder with other data is refused, not mixed in
    with pytest.raises(InputError, match="other data or options"):
        tune(TEXTS, LABELS, TEXTS[:8], LABELS[:8], config, **search, checkpoint_dir=checkpoint)
    # and so is the checkpoint of an interrupted `eft train` (same <output>.checkpoint name)
    train_checkpoint = tmp_path / "model.checkpoint"
    train_checkpoint.mkdir()
    (train_checkpoint / "checkpoint.json").write_text("{}")
    with pytest.raises(InputError, match="interrupted `eft train`"):
        tune(*data, config, **search, checkpoint_dir=train_checkpoint)
    assert (train_checkpoint / "checkpoint.json").is_file()


def test_tuning_interrupted_before_its_first_row_keeps_its_fingerprint(
    tiny_bert_dir, tmp_path, monkeypatch
):
    import eft.tuning

    config = _config(tiny_bert_dir, learning_rate=1e-3)
    search = dict(max_epochs=1, n_hidden=[8], C=[1.0])
    data = (TEXTS, LABELS, TEXTS[:16], LABELS[:16])
    checkpoint = tmp_path / "tuning.checkpoint"

    def interrupted(*args, **kwargs):  # after the BP epoch's checkpoint, before its row
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(eft.tuning, "sweep", interrupted)
        with pytest.raises(KeyboardInterrupt):
            tune(*data, config, **search, checkpoint_dir=checkpoint)
    assert (checkpoint / "checkpoint-0" / "checkpoint.json").is_file()
    # other options in that folder are refused, not trained from its encoder
    other = _config(tiny_bert_dir, learning_rate=1e-6)
    with pytest.raises(InputError, match="other data or options"):
        tune(*data, other, **search, checkpoint_dir=checkpoint)
    resumed = tune(*data, config, **search, checkpoint_dir=checkpoint)
    seconds = resumed.epochs[0]["seconds"]  # the epoch trained by the first process counts
    assert seconds["total"] >= seconds["bp_epoch"] + seconds["sweep"]
    assert resumed.best_config == tune(*data, config, **search).best_config
    # a folder of something else is in the way
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(InputError, match="in the way"):
        tune(*data, config, **search, checkpoint_dir=tmp_path / "notes")


def test_tune_scores_heads_with_the_configs_class_weights(tiny_bert_dir, monkeypatch):
    import eft.tuning

    seen = []
    real = eft.tuning.sweep

    def spy(*args, **kwargs):
        seen.append(kwargs["class_weight"])
        return real(*args, **kwargs)

    monkeypatch.setattr(eft.tuning, "sweep", spy)
    data = (TEXTS, LABELS, TEXTS[:16], LABELS[:16])
    for weights in ("balanced", {"pos": 2.0}):
        config = _config(tiny_bert_dir, learning_rate=1e-3, class_weight=weights)
        tune(*data, config, max_epochs=1, n_hidden=[8], C=[1.0])
    counts = {c: LABELS.count(c) for c in ("neg", "pos")}
    balanced = {c: len(LABELS) / (2 * n) for c, n in counts.items()}
    assert seen == [balanced, {"neg": 1.0, "pos": 2.0}]  # as the tuned EFTClassifier's head


def test_tune_command_continues_after_an_interruption(tiny_bert_dir, tmp_path, monkeypatch):
    from eft.cli import main

    rows = list(zip(TEXTS, LABELS, strict=True))
    train = _write_csv(tmp_path / "train.csv", rows)
    dev = _write_csv(tmp_path / "dev.csv", rows[:16])
    command = ["tune", "--train", str(train), "--validation", str(dev)]
    command += ["--model", str(tiny_bert_dir), "--max-epochs", "2", "--grid-n-hidden", "8,16"]
    command += ["--learning-rate", "1e-3", "--output", str(tmp_path / "t"), "--quiet"]
    _stop_at_epoch(monkeypatch, stop_k=2)
    assert main(command) == 130
    assert not (tmp_path / "t").exists()
    assert (tmp_path / "t.checkpoint" / "tuning_state.json").is_file()
    monkeypatch.undo()
    assert main(command) == 0
    assert json.loads((tmp_path / "t" / "tuned_config.json").read_text())["config"]
    assert len(json.loads((tmp_path / "t" / "tuning.json").read_text())["epochs"]) == 2
    assert not (tmp_path / "t.checkpoint").exists()
