"""The ``eft`` command line, run as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eft import InputError
from tests.test_classifier import LABELS, TEXTS


def run_eft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "eft.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def _write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    train = _write_csv(folder / "train.csv", list(zip(TEXTS, LABELS, strict=True)))
    out = folder / "model"
    result = run_eft(
        "train",
        "--train",
        str(train),
        "--model",
        str(tiny_bert_dir),
        "--bp-epochs",
        "1",
        "--n-hidden",
        "32",
        "--learning-rate",
        "5e-4",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    return folder, out, result


def test_train_prints_timing_table_and_saves(trained):
    _, out, result = trained
    assert "model saved to" in result.stdout
    for phase in ("BP (steps 4-5)", "feedforward (steps 6-7)", "I-ELM (steps 8-9)", "total"):
        assert phase in result.stdout
    assert (out / "eft_config.json").is_file() and (out / "elm_head.safetensors").is_file()
    assert "not calibrated: train with validation data (--validation FILE" in result.stdout
    meta = json.loads((out / "eft_config.json").read_text())
    loss, seconds = meta["history"]["bp_train_loss"][0], meta["history"]["bp_epoch_seconds"][0]
    # each BP epoch as it ends, on stderr (no validation data: no accuracy)
    assert f"BP epoch 1/1: loss {loss:.4f} ({seconds:.1f} s)\n" in result.stderr


def test_train_with_validation_prints_the_models_score_and_its_calibration(
    tiny_bert_dir, tmp_path, capsys
):
    from eft.cli import main

    train = _write_csv(tmp_path / "train.csv", list(zip(TEXTS, LABELS, strict=True)))
    dev = _write_csv(tmp_path / "dev.csv", list(zip(TEXTS[8:40], LABELS[8:40], strict=True)))
    arguments = ["--train", str(train), "--validation", str(dev), "--model", str(tiny_bert_dir)]
    options = ["--bp-epochs", "1", "--n-hidden", "32", "--batch-size", "8", "--device", "cpu"]
    assert main(["train", *arguments, *options, "--output", str(tmp_path / "m")]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    meta = json.loads((tmp_path / "m" / "eft_config.json").read_text())
    epoch_score = 100 * meta["history"]["bp_validation_accuracy"][0]
    assert f", validation accuracy (linear head) {epoch_score:.2f} % (" in captured.err
    quiet = ["--quiet", "--output", str(tmp_path / "q")]
    assert main(["train", *arguments, *options, *quiet]) == 0
    assert "BP epoch" not in capsys.readouterr().err
    calibration = meta["history"]["calibration"]
    assert meta["temperature"] == calibration["temperature"]
    accuracy = 100 * meta["history"]["validation_accuracy"]
    assert f"validation accuracy of the model (I-ELM head): {accuracy:.2f}" in printed
    assert (
        f"softmax temperature {calibration['temperature']:.4g}, fitted on the validation data "
        f"(log-loss {calibration['validation_nll_uncalibrated']:.4f} -> "
        f"{calibration['validation_nll']:.4f})"
    ) in printed


def test_evaluate_writes_predictions_and_metrics(trained):
    folder, out, _ = trained
    data = _write_csv(folder / "test.csv", list(zip(TEXTS[:16], LABELS[:16], strict=True)))
    preds, metrics = folder / "preds.jsonl", folder / "metrics.json"
    result = run_eft(
        "evaluate",
        str(out),
        "--data",
        str(data),
        "--predictions",
        str(preds),
        "--metrics",
        str(metrics),
        "--device",
        "cpu",
        "--per-class",
    )
    assert result.returncode == 0, result.stderr
    for name in ("accuracy", "weighted_f1", "macro_f1", "precision", "recall", "support"):
        assert name in result.stdout
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 16 and {"id", "text", "label", "prediction", "score"} <= set(lines[0])
    scores = json.loads(metrics.read_text())
    accuracy = 100 * sum(x["label"] == x["prediction"] for x in lines) / 16
    assert scores["accuracy"] == pytest.approx(accuracy)
    # probability metrics from predict_proba (this model has no validation data: T = 1)
    from eft import EFTClassifier
    from eft.calibration import expected_calibration_error

    proba = EFTClassifier.from_pretrained(out, device="cpu").predict_proba(TEXTS[:16])
    truth = [["neg", "pos"].index(label) for label in LABELS[:16]]
    log_loss = -np.log(proba[np.arange(16), truth]).mean()
    assert scores["log_loss"] == pytest.approx(log_loss, rel=1e-5)
    assert f"log_loss    {log_loss:>8.4f}" in result.stdout
    assert scores["ece"] == pytest.approx(100 * expected_calibration_error(proba, truth))
    assert [x["score"] for x in lines] == pytest.approx(proba.max(1), abs=1e-6)
    assert "scores not calibrated: the model was trained without validation data" in result.stdout
    per_class = scores["per_class"]  # what the --per-class table printed
    assert sum(row["support"] for row in per_class.values()) == 16
    for label, row in per_class.items():
        printed = next(x.split() for x in result.stdout.splitlines() if x.split()[:1] == [label])
        assert printed[3] == f"{row['f1']:.2f}" and printed[4] == str(row["support"])
    # the same file compared with itself: no difference, comparable
    same = run_eft("compare", str(preds), str(preds), "--samples", "200")
    assert same.returncode == 0, same.stderr
    assert "difference +0.00" in same.stdout and "yes" in same.stdout


def test_validation_fraction_holds_out_training_rows(tiny_bert_dir, tmp_path):
    from eft import EFTConfig
    from eft.cli import _load_training_data, build_parser

    train = _write_csv(tmp_path / "train.csv", list(zip(TEXTS, LABELS, strict=True)))
    dev = _write_csv(tmp_path / "dev.csv", list(zip(TEXTS[:8], LABELS[:8], strict=True)))

    def load(*options: str, seed: int = 42):
        args = build_parser().parse_args(["train", "--train", str(train), *options])
        return _load_training_data(args, EFTConfig(seed=seed))

    texts, labels, eval_texts, eval_labels = load("--validation-fraction", "0.25")
    assert (len(texts), len(eval_texts)) == (48, 16) and len(eval_labels) == 16
    rows = sorted(zip(texts + eval_texts, labels + eval_labels, strict=True))
    assert rows == sorted(zip(TEXTS, LABELS, strict=True))  # every row once, either side
    assert load("--validation-fraction", "0.25")[2] == eval_texts  # the seed decides
    assert load("--validation-fraction", "0.25", seed=7)[2] != eval_texts
    assert len(load("--max-train", "40", "--validation-fraction", "0.1")[2]) == 4
    with pytest.raises(InputError, match="validation data already .--validation FILE"):
        load("--validation", str(dev), "--validation-fraction", "0.1")
    with pytest.raises(InputError, match="fraction 0.001 of 64 rows holds out no row"):
        load("--validation-fraction", "0.001")
    with pytest.raises(InputError, match=r"in \[0, 1\)"):
        load("--validation-fraction", "1.5")
    # a label whose every row is held out is named (the hold-out is not stratified)
    from eft.datasets import Split, hold_out

    rows = [*zip(TEXTS, LABELS, strict=True), ("a rare text", "mid")]
    train = _write_csv(tmp_path / "rare.csv", rows)
    split = Split([t for t, _ in rows], [y for _, y in rows])
    seeds = [s for s in range(50) if "mid" in hold_out(split, 0.25, s)[1].labels]
    with pytest.raises(InputError, match=rf"\(seed {seeds[0]}\) held out every training row"):
        load("--validation-fraction", "0.25", seed=seeds[0])
    kept = next(s for s in range(50) if s not in seeds)
    assert "mid" in load("--validation-fraction", "0.25", seed=kept)[1]


def test_predict_texts_and_files(trained):
    folder, out, _ = trained
    result = run_eft("predict", str(out), "great film", "awful book", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["great film", "awful book"]
    assert all(r["prediction"] in ("neg", "pos") and 0 < r["score"] <= 1 for r in rows)
    source = folder / "input.txt"
    source.write_text("great film\nawful book\n", encoding="utf-8")
    target = folder / "out.jsonl"
    result = run_eft(
        "predict", str(out), "--input", str(source), "--output", str(target), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(x)["prediction"] for x in target.read_text().splitlines()] == [
        r["prediction"] for r in rows
    ]
    # the predictions' precision chosen when loading (float32 here, as saved)
    same = run_eft("predict", str(out), "great film", "awful book", "--inference-precision", "no")
    assert same.returncode == 0, same.stderr
    assert [json.loads(line) for line in same.stdout.splitlines()] == rows
    # the saved model as an option, as `eft train --model` takes the encoder
    # (with every label's probability: the same lines, plus scores that sum to 1)
    result = run_eft("predict", "--model", str(out), "great film", "awful book", "--all-scores")
    assert result.returncode == 0, result.stderr
    full = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{k: v for k, v in r.items() if k != "scores"} for r in full] == rows
    for r in full:  # highest first, as a transformers pipeline with top_k=None
        assert {s["label"] for s in r["scores"]} == {"neg", "pos"}
        assert sum(s["score"] for s in r["scores"]) == pytest.approx(1)
        assert r["scores"][0] == {"label": r["prediction"], "score": r["score"]}
        assert r["scores"][0]["score"] >= r["scores"][1]["score"]
    # --text-column names a column of a table: refused where there is none
    for given, message in (
        (["great film"], "text arguments have no columns: drop it"),
        (["--input", "-"], "--input - (one text per line) have no columns"),
        (["--input", str(source)], "is a .txt file, one text per line, without columns"),
    ):
        result = run_eft("predict", str(out), *given, "--text-column", "review")
        assert result.returncode == 2 and message in result.stderr, result.stderr
    # eft's warnings are one line, as its errors are: no path and source line of eft's code
    holes = _write_csv(folder / "holes.csv", [("great film", "pos"), ("", "neg")])
    result = run_eft("predict", str(out), "--input", str(holes), "--bad-rows", "skip", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "eft: warning: holes.csv: skipped 1 bad row(s) of 2 (first: data row 2, line 3: empty "
        "'text')\n"
    )


def test_text_pairs_from_two_columns_train_evaluate_and_predict(
    tiny_bert_dir, tmp_path, capsys, monkeypatch
):
    import io

    from eft import EFTClassifier
    from eft.cli import main
    from tests.test_classifier import PAIR_LABELS, PAIR_TEXTS

    header = ("premise", "hypothesis", "label")
    rows = [(a, b, y) for (a, b), y in zip(PAIR_TEXTS, PAIR_LABELS, strict=True)]
    train = _write_csv(tmp_path / "train.csv", rows * 4, header=header)
    dev = _write_csv(tmp_path / "dev.csv", rows, header=header)
    columns = ["--text-column", "premise", "--text-pair-column", "hypothesis"]
    options = ["--model", str(tiny_bert_dir), "--bp-epochs", "1", "--n-hidden", "32"]
    options += ["--batch-size", "8", "--device", "cpu", "--quiet"]
    out = tmp_path / "model"
    arguments = ["train", "--train", str(train), "--validation", str(dev), *columns, *options]
    assert main([*arguments, "--output", str(out)]) == 0
    model = EFTClassifier.from_pretrained(out, device="cpu")
    assert model.text_pairs_
    expected = model.predict(PAIR_TEXTS).tolist()

    predictions = tmp_path / "preds.jsonl"
    evaluate = ["evaluate", str(out), "--data", str(dev), *columns, "--quiet"]
    assert main([*evaluate, "--predictions", str(predictions)]) == 0
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [(r["text"], r["text_pair"]) for r in lines] == PAIR_TEXTS
    assert [r["prediction"] for r in lines] == expected

    target = tmp_path / "out.jsonl"
    assert main(["predict", str(out), "--input", str(dev), *columns, "--output", str(target)]) == 0
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["text"], r["text_pair"], r["prediction"]) for r in lines] == [
        (a, b, y) for (a, b), y in zip(PAIR_TEXTS, expected, strict=True)
    ]
    # stdin: one text<TAB>text_pair per line, split on the first tab
    stdin = "".join(f"{a}\t{b}\n" for a, b in PAIR_TEXTS) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["predict", str(out), "--input", "-", "--output", str(target)]) == 0
    assert [json.loads(line) for line in target.read_text().splitlines()] == lines
    monkeypatch.setattr(
        "sys.stdin", io.StringIO(f"{PAIR_TEXTS[0][0]}\t{PAIR_TEXTS[0][1]}\nno tab\n")
    )
    assert main(["predict", str(out), "--input", "-"]) == 2
    assert "Line 2 of stdin has no tab" in capsys.readouterr().err
    # streamed, the same pairs give the same model (one chunk: the same batches)
    assert main([*arguments, "--stream", "--output", str(tmp_path / "streamed")]) == 0
    streamed = EFTClassifier.from_pretrained(tmp_path / "streamed", device="cpu")
    assert streamed.text_pairs_
    np.testing.assert_allclose(
        streamed.decision_function(PAIR_TEXTS), model.decision_function(PAIR_TEXTS), atol=1e-5
    )
    capsys.readouterr()
    refusals = [
        (["predict", str(out), "two words"], "--text-pair-column, or pipe text<TAB>text_pair"),
        (["predict", str(out), "two words", *columns], "names a column of --input FILE"),
        (
            ["evaluate", str(out), "--data", str(dev)],
            "give them in --data FILE with --text-column and --text-pair-column.",
        ),
        (["evaluate", str(out), "--dataset", "trec", *columns], "trec dataset holds single"),
        (
            ["train", "--dataset", "trec", *columns, *options, "--output", str(tmp_path / "d")],
            "the trec dataset holds single",
        ),
    ]
    for argv, message in refusals:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_multi_label_train_evaluate_predict_and_compare(tiny_bert_dir, tmp_path, capsys):
    from eft import EFTClassifier
    from eft.cli import main
    from tests.test_classifier import _multi_label_data

    texts, labels = _multi_label_data()
    train = tmp_path / "train.jsonl"  # JSON lists
    train.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n"
            for t, y in zip(texts[:240], labels[:240], strict=True)
        )
    )
    dev = _write_csv(
        tmp_path / "dev.csv", [(t, "|".join(y)) for t, y in zip(texts, labels, strict=True)][240:]
    )
    options = ["--model", str(tiny_bert_dir), "--bp-epochs", "1", "--n-hidden", "500"]
    options += ["--C", "100", "--learning-rate", "1e-3", "--device", "cpu", "--quiet"]
    out = tmp_path / "model"
    arguments = ["train", "--train", str(train), "--validation", str(dev), "--multi-label"]
    assert main([*arguments, "--label-separator", "|", *options, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 labels (multi-label)" in printed and "validation subset accuracy" in printed
    model = EFTClassifier.from_pretrained(out, device="cpu")
    assert model.multi_label_ and model.classes_.tolist() == ["money", "sports", "war"]
    expected = [model.classes_[row == 1].tolist() for row in model.predict(texts[240:])]

    predictions, metrics = tmp_path / "preds.jsonl", tmp_path / "metrics.json"
    # the model keeps its training file's separator: evaluate reads the CSV cells with it
    assert json.loads((out / "eft_config.json").read_text())["label_separator"] == "|"
    assert model.label_separator_ == "|"
    evaluate = ["evaluate", str(out), "--data", str(dev), "--quiet"]
    assert main([*evaluate, "--predictions", str(predictions), "--metrics", str(metrics)]) == 0
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["prediction"] for r in lines] == expected
    assert [r["label"] for r in lines] == [sorted(y) for y in labels[240:]]
    assert all(len(r["score"]) == len(r["prediction"]) for r in lines)
    assert all(0.5 < v <= 1 for r in lines for v in r["score"])
    scores = json.loads(metrics.read_text())
    subset = np.mean([r["label"] == r["prediction"] for r in lines])
    assert scores["subset_accuracy"] == pytest.approx(100 * subset)
    assert scores["subset_accuracy"] == pytest.approx(100 * model.score(texts[240:], labels[240:]))
    assert scores["micro_f1"] >= scores["subset_accuracy"] > 70
    assert set(scores["per_class"]) == {"money", "sports", "war"}

    target = tmp_path / "out.jsonl"
    predict = ["predict", str(out), *texts[240:245], "--all-scores", "--quiet"]
    assert main([*predict, "--output", str(target)]) == 0
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["prediction"] for r in lines] == expected[:5]
    assert all(len(r["scores"]) == 3 for r in lines)

    assert main(["compare", str(predictions), str(predictions), "--metric", "accuracy"]) == 0

    # --stream reads the label sets chunk by chunk: in one chunk, the in-memory model
    streamed = tmp_path / "streamed"
    loud = [option for option in options if option != "--quiet"]
    stream = [*arguments, "--label-separator", "|", "--stream", *loud]
    assert main([*stream, "--output", str(streamed)]) == 0
    captured = capsys.readouterr()
    assert "3 labels (multi-label)" in captured.out
    assert "BP epoch 1/1: loss " in captured.err
    assert ", validation subset accuracy (linear head) " in captured.err
    again = EFTClassifier.from_pretrained(streamed, device="cpu")
    assert again.multi_label_ and again.classes_.tolist() == model.classes_.tolist()
    assert again.label_separator_ == "|"  # fit_stream keeps the separator it read with
    np.testing.assert_allclose(
        again.decision_function(texts[240:]), model.decision_function(texts[240:]), atol=1e-5
    )
    capsys.readouterr()
    # --tune-thresholds: each label's threshold chosen on the validation file, saved
    tuned = tmp_path / "tuned"
    tuning = [*arguments, "--label-separator", "|", "--tune-thresholds", *options]
    assert main([*tuning, "--output", str(tuned)]) == 0
    assert "label thresholds tuned on the validation data" in capsys.readouterr().out
    saved = json.loads((tuned / "eft_config.json").read_text())
    assert saved["config"]["tune_thresholds"] is True
    assert saved["thresholds"] == saved["history"]["thresholds"]["tuned"]
    assert len(saved["thresholds"]) == 3
    refusals = [
        (["compare", str(predictions), str(predictions)], "subset accuracy only"),
        (
            [*tuning[:3], *tuning[5:], "--output", str(tmp_path / "t")],  # no --validation
            "tune_thresholds chooses the thresholds on validation data",
        ),
        (
            [
                "train",
                "--dataset",
                "trec",
                "--multi-label",
                *options,
                "--output",
                str(tmp_path / "d"),
            ],
            "the dataset trec has one label per text",
        ),
        (["evaluate", str(out), "--dataset", "trec"], "The model is multi-label"),
        (  # a separator given that is not the file's: the message names the file's
            ["evaluate", str(out), "--data", str(dev), "--label-separator", ";"],
            "holds labels joined by '|': give the file's separator with --label-separator '|' "
            "(this file was split at ';')",
        ),
        (  # JSON lists without --multi-label
            ["train", "--train", str(train), *options, "--output", str(tmp_path / "x")],
            "not a single label (multi-label data: `eft train --multi-label`)",
        ),
    ]
    for argv, message in refusals:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_predict_reads_stdin_with_input_dash(trained, monkeypatch, capsys):
    import io

    from eft.cli import main

    _, out, _ = trained
    capsys.readouterr()
    assert main(["predict", str(out), "great film", "awful book", "--quiet"]) == 0
    expected = capsys.readouterr().out
    for given in ("great film\n\nawful book\r\n", "\ufeffgreat film\nawful book\n"):
        for stdin in (io.StringIO(given), io.TextIOWrapper(io.BytesIO(given.encode()))):
            monkeypatch.setattr("sys.stdin", stdin)  # text, or bytes (.buffer) as a pipe's
            assert main(["predict", str(out), "--input", "-", "--quiet"]) == 0
            # blank lines skipped, line ends and a byte-order mark dropped, as from a file
            assert capsys.readouterr().out == expected
    # bytes that are not UTF-8 are named, whatever the locale decodes (a file's are too)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"good movie\n\xe9 bad\n")))
    assert main(["predict", str(out), "--input", "-", "--quiet"]) == 2
    assert "Line 2 of stdin is not UTF-8 encoded (byte 0xe9 at byte 0" in capsys.readouterr().err
    # a file with a bad row: refused, naming the option that skips it; or skipped
    holes = _write_csv(out.parent / "holes.csv", [("great film", "pos"), ("", "neg")])
    assert main(["predict", str(out), "--input", str(holes), "--quiet"]) == 2
    assert "(--bad-rows skip)" in capsys.readouterr().err
    assert main(["predict", str(out), "--input", str(holes), "--bad-rows", "skip", "--quiet"]) == 0
    assert capsys.readouterr().out == expected.splitlines(keepends=True)[0]

    class ClosedPipe(io.StringIO):  # `eft predict ... | head -1` once head has exited
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["predict", str(out), "great film", "--quiet"]) == 141
    monkeypatch.undo()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["predict", str(out), "--input", "-"]) == 2
    assert "read no text from stdin" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("great film\n"))
    assert main(["predict", str(out), "--input", "-", "--text-pair-column", "b"]) == 2
    assert "drop --text-pair-column" in capsys.readouterr().err
    pairs = _write_csv(
        out.parent / "pairs.csv", [("great film", "a b", "pos")], ("text", "b", "label")
    )
    for command in (["predict", str(out), "--input"], ["evaluate", str(out), "--data"]):
        assert main([*command, str(pairs), "--text-pair-column", "b"]) == 2
        assert "trained on single texts: drop --text-pair-column b" in capsys.readouterr().err


def test_predict_keeps_integer_labels_integers_in_every_field(tiny_bert_dir, tmp_path):
    from eft import EFTClassifier
    from tests.test_classifier import LABELS, TEXTS, _config

    labels = [int(label == "pos") for label in LABELS]
    model = EFTClassifier(_config(tiny_bert_dir)).fit(TEXTS, labels)
    model.save_pretrained(tmp_path / "model")
    result = run_eft("predict", str(tmp_path / "model"), TEXTS[0], "--all-scores")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert isinstance(row["prediction"], int)
    assert sorted(s["label"] for s in row["scores"]) == [0, 1]  # not "0", "1"


def test_tune_names_the_rule_it_used():
    from eft.cli import _selection_line
    from eft.tuning import SELECTIONS

    lines = {selection: _selection_line(selection, 0.0123) for selection in SELECTIONS[1:]}
    assert "fewest epochs, then the smallest n_hidden, within 1.23 points" in lines["one_se"]
    assert "at the best k, the smallest n_hidden" in lines["one_se_head"]
    assert "fewest epochs, then the best head at that k" in lines["one_se_epoch"]


def test_the_saved_model_is_the_first_argument_or_model():
    from eft.cli import _saved_model_dir, build_parser
    from eft.errors import InputError

    parse = build_parser().parse_args
    assert _saved_model_dir(parse(["evaluate", "m", "--data", "d.csv"]), "evaluate") == ("m", [])
    assert _saved_model_dir(parse(["evaluate", "--model", "m", "--data", "d.csv"]), "x")[0] == "m"
    args = parse(["predict", "--model", "m", "a text", "another"])
    assert _saved_model_dir(args, "predict") == ("m", ["a text", "another"])
    assert _saved_model_dir(parse(["predict", "m", "a text"]), "predict") == ("m", ["a text"])
    assert args.model_dir == "a text", "the parsed options are left as they were"
    with pytest.raises(InputError, match="Name the saved model: eft predict MODEL_DIR"):
        _saved_model_dir(parse(["predict"]), "predict")
    with pytest.raises(InputError, match="Two models given"):
        _saved_model_dir(parse(["evaluate", "m", "--model", "n"]), "evaluate")


def test_help_documents_every_option():
    result = run_eft("train", "--help")
    assert result.returncode == 0
    for option in ("--bp-epochs", "--n-hidden", "--C", "--method", "--model", "--fused"):
        assert option in result.stdout
    assert "--fused-fraction" in result.stdout
    assert "default" in result.stdout


def test_train_options_become_the_configuration():
    from eft.cli import _config_from_args, build_parser

    args = build_parser().parse_args(
        ["train", "--train", "t.csv", "--fused", "--fused-fraction", "0.5", "--n-hidden", "64"]
    )
    config = _config_from_args(args)
    assert config.elm_from_last_epoch is True and config.fused_fraction == 0.5
    assert config.n_hidden == 64 and config.bp_epochs == 1  # the rest keeps its defaults
    assert config.inference_precision == "same"
    args = build_parser().parse_args(
        ["train", "--train", "t.csv", "--mixed-precision", "no", "--inference-precision", "bf16"]
    )
    config = _config_from_args(args)
    assert (config.mixed_precision, config.inference_precision) == ("no", "bf16")
    assert config.layer_lr_decay == 1.0
    args = build_parser().parse_args(
        ["tune", "--train", "t.csv", "--output", "o", "--layer-lr-decay", "0.8"]
    )
    assert _config_from_args(args).layer_lr_decay == 0.8
    assert (config.label_smoothing, config.contrastive_weight) == (0.0, 0.0)  # off
    args = build_parser().parse_args(
        ["tune", "--train", "t.csv", "--output", "o", "--label-smoothing", "0.1"]
        + ["--contrastive-weight", "0.5"]
    )
    config = _config_from_args(args)
    assert (config.label_smoothing, config.contrastive_weight) == (0.1, 0.5)


def test_config_files_and_options_together(tmp_path):
    from eft.cli import _config_from_args, build_parser

    def config_of(*options):
        return _config_from_args(build_parser().parse_args(["train", "--train", "t.csv", *options]))

    file = tmp_path / "c.json"
    file.write_text('{"bp_epochs": 2}')  # no learning rate: --method's default
    assert config_of("--config", str(file), "--method", "bp").learning_rate == 5e-5
    assert config_of("--config", str(file)).learning_rate == 2e-4
    assert config_of("--config", str(file), "--method", "bp").bp_epochs == 2
    # a saved model's configuration names its run's checkpoint folder: never reused
    file.write_text('{"config": {"checkpoint_dir": "keepme", "n_hidden": 20}}')
    config = config_of("--config", str(file))
    assert config.checkpoint_dir is None and config.n_hidden == 20


@pytest.mark.parametrize("command", ["experiment", "tune", "bench"])
def test_single_process_commands_refuse_a_distributed_launch(
    command, monkeypatch, tmp_path, capsys
):
    """Under torchrun every rank would run the whole study and write the same files."""
    from eft.cli import EXIT_INPUT_ERROR, main

    arguments = {
        "experiment": ["e.json"],
        "tune": ["--train", "t.csv", "--output", str(tmp_path / "tuned")],
        "bench": ["--dataset", "trec", "--output-dir", str(tmp_path / "bench")],
    }[command]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([command, *arguments]) == EXIT_INPUT_ERROR
    error = capsys.readouterr().err
    assert f"`eft {command}` runs in one process" in error and "WORLD_SIZE=2" in error
    assert list(tmp_path.iterdir()) == []  # nothing written
    monkeypatch.setenv("WORLD_SIZE", "1")
    from eft.cli import _refuse_distributed_launch

    _refuse_distributed_launch(command)  # one process: allowed


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_column", "column 'label' not found"),
        ("empty", "empty"),
        ("single_class", "single class ('pos');"),  # the label as written, no numpy repr
        ("unreadable", "train.csv"),
        ("not_a_model", "not a Hugging Face model folder"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(case, message, tiny_bert_dir, tmp_path):
    train = tmp_path / "train.csv"
    model = str(tiny_bert_dir)
    if case == "missing_column":
        _write_csv(train, [("good", "pos"), ("bad", "neg")], header=("text", "labels"))
    elif case == "empty":
        train.write_text("", encoding="utf-8")
    elif case == "single_class":
        _write_csv(train, [("good film", "pos"), ("great film", "pos")])
    elif case == "unreadable":
        train.mkdir()  # a folder where a file is expected
    else:
        _write_csv(train, [("good film", "pos"), ("bad film", "neg")])
        model = str(tmp_path)
    out = tmp_path / "model-out"
    result = run_eft("train", "--train", str(train), "--model", model, "--output", str(out))
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("eft: error:"), result.stderr
    assert message in error_lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model-out")]


def test_the_command_ends_the_process_group_it_ran_in(tiny_bert_dir, tmp_path):
    """Under torchrun a gloo rank exiting with its group open can abort at shutdown."""
    import torch.distributed as dist

    from eft.cli import main

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    train = tmp_path / "train.csv"
    _write_csv(train, [("good film", "pos"), ("great film", "pos")])  # one class: an error
    try:
        code = main(["train", "--train", str(train), "--model", str(tiny_bert_dir)])
        assert code == 2
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_train_stream_reads_the_file_in_chunks_and_gives_the_same_model(
    trained, tiny_bert_dir, tmp_path
):
    import gzip

    _, out, _ = trained
    train = tmp_path / "train.jsonl.gz"
    with gzip.open(train, "wt", encoding="utf-8") as handle:
        for text, label in zip(TEXTS, LABELS, strict=True):
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    common = ("--n-hidden", "32", "--learning-rate", "5e-4", "--batch-size", "8")
    result = run_eft(
        "train",
        "--train",
        str(train),
        "--stream",
        "--chunk-rows",
        "1000",
        "--model",
        str(tiny_bert_dir),
        "--bp-epochs",
        "1",
        *common,
        "--device",
        "cpu",
        "--quiet",
        "--output",
        str(tmp_path / "streamed"),
    )
    assert result.returncode == 0, result.stderr
    assert f"on {len(TEXTS)} texts" in result.stdout
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n")
    predictions = [
        run_eft("predict", str(model), "--input", str(texts_file)).stdout
        for model in (out, tmp_path / "streamed")
    ]
    assert predictions[0] == predictions[1] and predictions[0].strip()
    for given in (["--dataset", "trec"], ["--train", str(train), "--validation-fraction", "0"]):
        bad = run_eft("train", *given, "--stream", "--output", str(tmp_path / "x"))
        assert bad.returncode == 2 and "--stream reads a --train FILE" in bad.stderr


def test_training_data_options_together(tmp_path, data_dir, tiny_bert_dir, monkeypatch):
    import eft.encoder
    from eft import datasets
    from eft.cli import _config_from_args, _load_training_data, build_parser

    def load(*options):
        args = build_parser().parse_args(["train", "--output", "o", *options])
        return _load_training_data(args, _config_from_args(args))

    train = _write_csv(tmp_path / "t.csv", list(zip(TEXTS, LABELS, strict=True)))
    # --max-train keeps the rows that eft bench and eft experiment keep
    texts, labels, _, _ = load("--train", str(train), "--max-train", "10")
    kept = datasets.subsample(datasets.Split(list(TEXTS), list(LABELS)), 10, seed=0)
    assert (texts, labels) == (kept.texts, kept.labels)
    with pytest.raises(InputError, match="positive integer, got 0"):
        load("--train", str(train), "--max-train", "0")
    # a validation file beside a dataset was ignored
    with pytest.raises(InputError, match="--validation FILE goes with --train FILE"):
        load("--dataset", "trec", "--data-dir", str(data_dir), "--validation", str(train))
    # AG News ships its test split only here: named, not a KeyError
    with pytest.raises(InputError, match="dataset 'ag_news' has no 'train' split"):
        load("--dataset", "ag_news", "--data-dir", str(data_dir))
    # EFT* context counts tokens with the configured model's tokenizer
    asked = []
    real = eft.encoder.load_tokenizer
    monkeypatch.setattr(eft.encoder, "load_tokenizer", lambda *a: asked.append(a) or real(*a))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": str(tiny_bert_dir)}))
    load("--dataset", "meld", "--data-dir", str(data_dir), "--config", str(config))
    load("--dataset", "meld", "--data-dir", str(data_dir), "--context-past", "8")  # default
    load(
        *["--dataset", "meld", "--data-dir", str(data_dir), "--config", str(config)],
        "--context-past",
        "8",
    )
    assert asked == [(None, False), (str(tiny_bert_dir), False)]  # default, then --config


def test_commands_refuse_before_working_and_leave_nothing_behind(
    trained, tiny_bert_dir, tmp_path, capsys
):
    from eft.cli import main

    folder, out, _ = trained
    train = folder / "train.csv"
    capsys.readouterr()
    # texts after an option are texts (argparse stopped at the first option)
    assert main(["predict", str(out), "great film", "--quiet"]) == 0
    first = capsys.readouterr().out
    assert main(["predict", str(out), "--quiet", "great film"]) == 0
    assert capsys.readouterr().out == first
    # a file where a folder goes, a folder where a file goes: refused before any work
    afile = tmp_path / "afile"
    afile.write_text("x")
    for command in (
        ["tune", "--train", str(train), "--validation", str(train), "--output", str(afile)],
        ["bench", "--train", str(train), "--validation", str(train), "--test", str(train)]
        + ["--output-dir", str(afile)],
    ):
        assert main(command) == 2
        assert "is a file; give a folder" in capsys.readouterr().err
    for command in (
        ["predict", str(out), "great film", "--output", str(tmp_path)],
        ["evaluate", str(out), "--data", str(train), "--predictions", str(tmp_path)],
        ["evaluate", str(out), "--data", str(train), "--metrics", str(tmp_path)],
    ):
        assert main(command) == 2
        assert "is a folder; give the path of the file" in capsys.readouterr().err
    assert main(["tune", "--train", str(train), "--output", "t", "--method", "bp"]) == 2
    assert "--method bp (standard fine-tuning) has none of them" in capsys.readouterr().err
    bp_config = tmp_path / "bp.json"
    bp_config.write_text(json.dumps({"method": "bp"}))
    assert main(["tune", "--train", str(train), "--output", "t", "--config", str(bp_config)]) == 2
    assert "--method bp (standard fine-tuning) has none of them" in capsys.readouterr().err
    given = ["tune", "--train", str(train), "--output", "t", "--n-hidden", "50", "--C", "3"]
    assert main(given) == 2  # ignored before
    assert "chooses k, n_hidden and C itself: drop --n-hidden, --C" in capsys.readouterr().err
    patience = ["tune", "--train", str(train), "--validation", str(train), "--output", "t"]
    assert main([*patience, "--early-stopping-patience", "2", "--quiet"]) == 2
    assert "eft tune stops at the first epoch whose" in capsys.readouterr().err
    assert not Path("t").exists()
    # a bad --model: the tuning run's new checkpoint goes, and the corrected command runs
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    tuned = tmp_path / "tuned"
    command = ["tune", "--train", str(train), "--validation", str(train), "--output", str(tuned)]
    command += ["--max-epochs", "1", "--grid-n-hidden", "16", "--grid-C", "1", "--quiet"]
    assert main([*command, "--model", str(not_a_model)]) == 2
    assert "is not a Hugging Face model folder" in capsys.readouterr().err
    assert not (tmp_path / "tuned.checkpoint").exists()
    assert main([*command, "--model", str(tiny_bert_dir), "--device", "cpu"]) == 0
    assert (tuned / "tuned_config.json").is_file()
    # a loaded model's config does not carry its training run's checkpoint folder
    from eft import EFTClassifier

    saved = json.loads((out / "eft_config.json").read_text())["config"]["checkpoint_dir"]
    assert saved and EFTClassifier.from_pretrained(out).config.checkpoint_dir is None


def test_help_shows_defaults_of_zero_and_compare_prints_both_p_values(tmp_path):
    from eft.cli import build_parser

    help_text = " ".join(
        build_parser()._subparsers._group_actions[0].choices["compare"].format_help().split()
    )
    assert "(default: 0)" in help_text  # --seed 0 was hidden as if it had no default
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    truth = ["x", "y"] * 20
    a.write_text("".join(json.dumps({"label": t, "prediction": t}) + "\n" for t in truth))
    b.write_text("".join(json.dumps({"label": t, "prediction": "x"}) + "\n" for t in truth))
    result = run_eft("compare", str(a), str(b), "--metric", "accuracy")
    assert result.returncode == 0, result.stderr
    assert "p-value (B better than A): 1.0000" in result.stdout
    assert "p-value (B worse than A) 0.0000 >= 0.05): no" in result.stdout


def test_an_input_error_keeps_finished_work_and_removes_the_rest(tmp_path):
    from eft.checkpoint import finished_parts
    from eft.cli import _new_folders_go_on_input_error

    for finished, kept in ((["tuning"], True), ([], False)):
        checkpoint, output = tmp_path / f"run{kept}.checkpoint", tmp_path / f"run{kept}"
        with pytest.raises(InputError):
            with _new_folders_go_on_input_error(checkpoint, output, finished=finished_parts):
                checkpoint.mkdir()
                output.mkdir()
                state = {"finished": finished}
                (checkpoint / "run_state.json").write_text(json.dumps(state))
                raise InputError("a later method's option is refused")
        assert checkpoint.exists() == output.exists() == kept
    # without a checkpoint, files written to the output are finished work
    output = tmp_path / "no-checkpoint"
    with pytest.raises(InputError):
        with _new_folders_go_on_input_error(None, output, finished=finished_parts):
            output.mkdir()
            (output / "eft_seed42.jsonl").write_text("{}\n")
            raise InputError("the second row is refused")
    assert output.exists()


def test_per_class_lists_every_label_of_the_model_in_its_order():
    """Single-label --per-class lists a label absent from the data and the predictions, with
    support 0, as multi-label models list every label."""
    from types import SimpleNamespace

    from eft.cli import _single_label_evaluation

    proba = np.array([[0.1, 0.2, 0.7], [0.1, 0.3, 0.6], [0.8, 0.1, 0.1]])
    model = SimpleNamespace(classes_=np.array([2, 7, 10]), predict_proba=lambda texts: proba)
    scores, _, per_class, rows = _single_label_evaluation(model, [10, 2, 2], ["a", "b", "c"])
    assert list(per_class) == ["2", "7", "10"]  # the model's order, not the strings' order
    assert per_class["7"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per_class["2"]["support"] == 2 and per_class["2"]["recall"] == 50.0
    assert [row["prediction"] for row in rows] == ["10", "10", "2"]
    assert scores["accuracy"] == pytest.approx(200 / 3)


def test_main_puts_back_the_warning_format_it_found(monkeypatch, capsys):
    """eft's one-line warnings last as long as the command: a caller's own format stays."""
    import warnings

    from eft.cli import main

    def mine(*args, **kwargs):
        return "mine\n"

    monkeypatch.setattr(warnings, "formatwarning", mine)
    assert main(["evaluate", "no-such-model", "--data", "x.csv"]) == 2
    assert warnings.formatwarning is mine
