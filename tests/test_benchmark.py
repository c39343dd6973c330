"""`eft bench`: every method side by side, its JSON layout, and the splits it uses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eft import InputError
from eft.benchmark import load_splits, read_predictions
from eft.metrics import classification_scores, paired_bootstrap
from eft.tuning import SELECTIONS
from tests.test_cli import run_eft


def test_bench_runs_every_method_side_by_side(data_dir, tiny_bert_dir, tmp_path):
    out = tmp_path / "results"
    result = run_eft(
        "bench",
        "--dataset",
        "trec",
        "--data-dir",
        str(data_dir),
        "--model",
        str(tiny_bert_dir),
        "--max-train",
        "160",
        "--max-validation",
        "60",
        "--max-test",
        "80",
        "--max-length",
        "24",
        "--tune",
        "--tag",
        "tiny",
        "--output-dir",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "bench_trec_tiny.json").read_text())
    assert payload["dataset"] == "trec" and payload["metric"] == "accuracy"
    assert payload["seed"] == 42  # the default --seed, recorded with the run
    assert payload["sizes"] == {"train": 160, "validation": 60, "test": 80}
    assert payload["machine"]["versions"]["eft"] and payload["machine"]["usable_cores"] >= 1
    methods = payload["methods"]
    assert set(methods) == {"bp", "eft", "eft_fused", "probe", "logreg_head"}
    bp, eft = methods["bp"], methods["eft"]
    for name, method in methods.items():
        assert 0.0 <= method["test_score"] <= 100.0 and method["train_seconds"] > 0
        assert method["hyper_parameters"]
        if name != "bp":
            assert 0.0 <= method["p_value_vs_bp"] <= 1.0
        if name != "logreg_head":
            assert method["hyper_parameters"]["seed"] == 42
            ratio = method["train_seconds"] / bp["train_seconds"]
            assert method["time_ratio_to_bp"] == pytest.approx(ratio)
            assert sum(method["phases"].values()) <= method["train_seconds"] + 1e-6
            # fused mode's head statistics were counted twice up to the best epoch
            assert method["train_seconds_to_best"] <= method["train_seconds"] + 1e-6
    # the baseline: at most 10 epochs, early stopping with patience 2, its own learning rate
    assert 1 <= bp["bp_epochs_run"] <= 10 and bp["hyper_parameters"]["method"] == "bp"
    assert bp["bp_epochs_run"] == 10 or bp["bp_epochs_run"] - bp["bp_best_epoch"] == 2
    assert bp["train_seconds_to_best"] <= bp["train_seconds"]
    assert len(bp["bp_epoch_seconds"]) == bp["bp_epochs_run"]
    assert sum(bp["bp_epoch_seconds"]) == pytest.approx(bp["phases"]["bp"])
    assert bp["validation_seconds"] > 0 and eft["validation_seconds"] == 0.0
    assert bp["hyper_parameters"]["learning_rate"] == 5e-5
    assert eft["hyper_parameters"]["learning_rate"] == 2e-4
    # EFT runs with the tuned k, n_hidden and C; fused mode and the probe share the head
    best = payload["tuning"]["config"]
    assert eft["hyper_parameters"]["bp_epochs"] == best["bp_epochs"]
    assert (eft["hyper_parameters"]["n_hidden"], eft["hyper_parameters"]["C"]) == (
        best["n_hidden"],
        best["C"],
    )
    assert methods["eft_fused"]["hyper_parameters"]["elm_from_last_epoch"] is True
    assert methods["probe"]["hyper_parameters"]["bp_epochs"] == 0
    assert methods["probe"]["phases"]["bp"] == 0.0
    head = methods["logreg_head"]
    speedup = head["train_seconds"] / head["ielm_head_seconds"]
    assert head["speedup_ielm_over_logreg"] == pytest.approx(speedup)
    # the heads the tuning rules pick at EFT's k, tested on the same features: the paper's
    # rule (the one used) is EFT's own head; one_se_head is never wider
    by_selection = head["ielm_heads_by_selection"]
    assert {"best", "one_se_head"} <= set(by_selection) <= set(SELECTIONS)
    paper, lean = by_selection["best"], by_selection["one_se_head"]
    assert (paper["n_hidden"], paper["C"]) == (best["n_hidden"], best["C"])
    assert paper["test_score"] == head["ielm_head_test_score"]
    assert paper["validation_score"] == payload["tuning"]["best_score"]
    assert lean["n_hidden"] <= paper["n_hidden"] and lean["fit_seconds"] > 0
    standard_error = payload["tuning"]["standard_error"]
    assert lean["validation_score"] >= paper["validation_score"] - standard_error - 1e-12
    assert 0.0 <= lean["test_score"] <= 100.0
    markdown = (out / "bench_trec_tiny.md").read_text()
    assert "| eft_fused |" in markdown and "LogisticRegression" in markdown
    assert "nan" not in markdown  # what a method lacks (bp's p against itself) reads "-"
    assert "| 1.000 | " in next(line for line in markdown.splitlines() if line.startswith("| bp |"))
    assert payload["methods"]["logreg_head"]["test_accuracy"] >= 0
    assert "The head each tuning rule picks at the same k" in markdown
    assert all((out / plot).is_file() for plot in payload["plots"])
    assert "bench_trec_tiny_tuning/tuning.png" in payload["plots"]
    assert (out / "bench_trec_tiny_tuning" / "tuned_config.json").is_file()
    # every method's test predictions are kept: the p-values can be recomputed from them
    labels, predictions = read_predictions(out / payload["predictions_file"])
    assert payload["predictions_file"] == "bench_trec_tiny_predictions.jsonl"
    assert labels == list(load_splits("trec", data_dir, 160, 60, 80)[2].labels)
    assert set(predictions) == set(methods)
    assert all(len(values) == len(labels) for values in predictions.values())
    again = paired_bootstrap(labels, predictions["bp"], predictions["eft"], metric="accuracy")
    assert again["p_value_worse"] == eft["p_value_vs_bp"]
    assert classification_scores(labels, predictions["eft"])["accuracy"] == eft["test_score"]
    assert not list(out.glob(".*tmp*")), "no staging files left behind"
    assert not list(out.glob("*.checkpoint")), "the finished run's checkpoint folder is gone"


def test_bench_on_your_own_files_and_bad_data_options(tiny_bert_dir, tmp_path):
    words = {"sports": "match goal team score", "tech": "chip software code laptop"}
    for split, n in (("train", 40), ("dev", 12), ("test", 16)):
        rows = ["text,label"]
        rows += [f"{words[label]} item {i},{label}" for i in range(n) for label in words]
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    files = ["--train", str(tmp_path / "train.csv"), "--validation", str(tmp_path / "dev.csv")]
    result = run_eft(
        "bench",
        *files,
        "--test",
        str(tmp_path / "test.csv"),
        "--name",
        "news",
        "--metric",
        "macro_f1",
        "--model",
        str(tiny_bert_dir),
        "--max-length",
        "16",
        "--batch-size",
        "16",
        "--inference-precision",
        "bf16",
        "--output-dir",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "bench_news.json").read_text())
    for method in ("bp", "eft", "eft_fused", "probe"):
        assert payload["methods"][method]["hyper_parameters"]["inference_precision"] == "bf16"
    assert payload["dataset"] == "news" and payload["metric"] == "macro_f1"
    assert payload["sizes"] == {"train": 80, "validation": 24, "test": 32}
    assert payload["dataset_options"]["files"][0].endswith("train.csv")
    assert payload["methods"]["eft"]["hyper_parameters"]["batch_size"] == 16
    assert (
        payload["methods"]["eft"]["scores"]["macro_f1"] == payload["methods"]["eft"]["test_score"]
    )
    missing = run_eft("bench", *files, "--output-dir", str(out))
    assert missing.returncode == 2 and "--test" in missing.stderr
    both = run_eft("bench", "--dataset", "trec", *files, "--test", "t.csv")
    assert both.returncode == 2 and "not both" in both.stderr
    pairs = run_eft("bench", "--dataset", "trec", "--text-pair-column", "b")
    assert pairs.returncode == 2 and "the trec dataset holds single texts" in pairs.stderr


def test_bench_on_multi_label_files(tiny_bert_dir, tmp_path):
    from tests.test_classifier import _multi_label_data

    texts, labels = _multi_label_data(200)
    rows = list(zip(texts, labels, strict=True))
    for split, part in (("train", rows[:120]), ("dev", rows[120:160]), ("test", rows[160:])):
        lines = [json.dumps({"text": t, "label": "|".join(y)}) for t, y in part]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    files = [
        f"--{flag}={tmp_path / name}.jsonl"
        for flag, name in (("train", "train"), ("validation", "dev"), ("test", "test"))
    ]
    options = ["--model", str(tiny_bert_dir), "--max-length", "16", "--batch-size", "16"]
    options += ["--n-hidden", "500", "--C", "100", "--learning-rate", "1e-3", "--quiet"]
    out = tmp_path / "out"
    result = run_eft(
        "bench",
        *files,
        "--multi-label",
        "--label-separator",
        "|",
        "--name",
        "tags",
        *options,
        "--output-dir",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "bench_tags.json").read_text())
    assert payload["multi_label"] is True and payload["metric"] == "accuracy"
    # the printed summary is the whole table (the notes after it cut its top rows before)
    table = [line.split(" | ")[0][2:] for line in result.stdout.splitlines() if line[:2] == "| "]
    assert table[0] == "method" and table[1:6] == ["bp", "eft", "eft_fused", "probe", "logreg_head"]
    truth, predictions = read_predictions(out / "bench_tags_predictions.jsonl")
    assert truth == [list(y) for y in labels[160:]]  # label lists, as the file orders them
    for method in ("bp", "eft", "eft_fused", "probe"):
        record = payload["methods"][method]
        subset = np.mean(
            [set(p) == set(y) for p, y in zip(predictions[method], truth, strict=True)]
        )
        assert record["test_score"] == pytest.approx(100 * subset)
        assert record["scores"]["subset_accuracy"] == record["test_score"]
        assert set(record["scores"]) >= {"micro_f1", "macro_f1", "hamming_loss"}
        if method != "bp":
            assert 0 <= record["p_value_vs_bp"] <= 1
    assert payload["methods"]["eft"]["test_score"] > 50  # 8 label sets: 1/8 by chance
    head = payload["methods"]["logreg_head"]  # one LogisticRegression per label
    subset = np.mean(
        [set(p) == set(y) for p, y in zip(predictions["logreg_head"], truth, strict=True)]
    )
    assert head["test_score"] == pytest.approx(100 * subset)
    assert {label for row in predictions["logreg_head"] for label in row} <= {
        "money",
        "sports",
        "war",
    }
    assert "Multi-label: accuracy is the subset accuracy" in (out / "bench_tags.md").read_text()
    for extra, message in (
        (["--metric", "macro_f1"], "A multi-label bench scores the subset accuracy"),
        (["--dataset", "trec"], "the trec dataset has one label per text"),
    ):
        given = files if extra[0] == "--metric" else []
        refused = run_eft("bench", *given, "--multi-label", *extra)
        assert refused.returncode == 2 and message in refused.stderr


def test_bench_splits_ag_news_test_file_when_train_is_absent(data_dir):
    train, validation, test, options = load_splits("ag_news", data_dir)
    assert options == {"test_fraction": 0.2}
    assert len(train) + len(validation) + len(test) == 7600
    assert len(test) == 1520
    small = load_splits("trec", data_dir, max_train=100, max_validation=50, max_test=40)
    assert [len(split) for split in small[:3]] == [100, 50, 40]
    assert small[3] == {"validation_fraction": 0.1}
    # the spellings datasets.load takes get the same splits (agnews: its test split divided)
    assert load_splits("AG-News", data_dir)[3] == {"test_fraction": 0.2}
    assert load_splits("TREC", data_dir, max_train=100)[3] == {"validation_fraction": 0.1}
    import argparse

    from eft.benchmark import METRIC, canonical_dataset

    args = argparse.Namespace(dataset="MELD")
    canonical_dataset(args)
    assert args.dataset == "meld" and METRIC["meld"] == "weighted_f1"
    with pytest.raises(InputError, match="must be a positive integer, got 0"):  # kept all
        load_splits("trec", data_dir, max_train=0)


def test_the_resume_fingerprint_leaves_out_options_not_given():
    """A bench interrupted under an eft without a newer option (None when not given) keeps
    its fingerprint under one with it; a given value, options' or data's change it."""
    import argparse

    from eft.benchmark import _run_digest
    from eft.datasets import Split

    splits = [Split(["a text", "b text"], ["x", "y"])]
    older = argparse.Namespace(dataset=None, train="t.csv", seed=42, quiet=True)
    newer = argparse.Namespace(**vars(older), text_pair_column=None)
    assert _run_digest(older, splits) == _run_digest(newer, splits)
    single = argparse.Namespace(**vars(newer), multi_label=False, label_separator=",")
    assert _run_digest(single, splits) == _run_digest(older, splits)  # not multi-label
    multi = argparse.Namespace(**vars(newer), multi_label=True, label_separator=",")
    assert _run_digest(multi, splits) != _run_digest(older, splits)
    given = argparse.Namespace(**vars(older), text_pair_column="hypothesis")
    assert _run_digest(given, splits) != _run_digest(older, splits)
    assert _run_digest(argparse.Namespace(**{**vars(older), "seed": 43}), splits) != (
        _run_digest(older, splits)
    )
    assert _run_digest(older, [Split(["a text", "b text"], ["x", "x"])]) != (
        _run_digest(older, splits)
    )


def test_interrupted_bench_continues_to_the_results_of_an_uninterrupted_run(
    tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    """Ctrl-C in the tuning's second epoch, in the baseline's third, then in the probe: the
    same command continues each time (finished parts are not rerun) and ends with an
    uninterrupted run's results."""
    from pathlib import Path

    import eft.backprop
    import eft.benchmark
    from eft.cli import main

    words = {"sports": "match goal team score", "tech": "chip software code laptop"}
    for split, n in (("train", 24), ("dev", 10), ("test", 12)):
        rows = ["text,label"]
        rows += [f"{words[label]} item {i},{label}" for i in range(n) for label in words]
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")

    def bench(out: Path, *extra: str) -> int:
        return main(
            [
                "bench",
                *(
                    "--train",
                    str(tmp_path / "train.csv"),
                    "--validation",
                    str(tmp_path / "dev.csv"),
                ),
                *("--test", str(tmp_path / "test.csv"), "--name", "news"),
                *("--tune", "--tune-max-epochs", "2"),
                *("--model", str(tiny_bert_dir), "--max-length", "16", "--batch-size", "16"),
                *("--output-dir", str(out), "--quiet", *extra),
            ]
        )

    reference_dir, out = tmp_path / "reference", tmp_path / "out"
    assert bench(reference_dir, "--no-checkpoint") == 0
    assert not (reference_dir / "bench_news.checkpoint").exists()
    checkpoint = out / "bench_news.checkpoint"

    save_checkpoint = eft.backprop.save_checkpoint

    stop_at = ("checkpoint-0", 2)  # first in the tuning's second epoch, then in the baseline's

    def save_then_stop(folder, epoch, *args, **kwargs):
        save_checkpoint(folder, epoch, *args, **kwargs)
        if (Path(folder).name, epoch) == stop_at:
            raise KeyboardInterrupt  # as Ctrl-C after that epoch

    monkeypatch.setattr(eft.backprop, "save_checkpoint", save_then_stop)
    capsys.readouterr()
    assert bench(out) == 130
    assert (checkpoint / "tuning").is_dir() and not (checkpoint / "bp").exists()
    stop_at = ("bp", 2)
    assert bench(out) == 130
    assert "run the same command again to continue" in capsys.readouterr().err
    assert (checkpoint / "bp" / "checkpoint.json").is_file()
    assert not (out / "bench_news.json").exists()
    monkeypatch.setattr(eft.backprop, "save_checkpoint", save_checkpoint)
    # other options on a kept run are refused, and the run is left as it was
    assert bench(out, "--seed", "7") == 2
    assert "other data or options" in capsys.readouterr().err

    ran: list[str] = []
    run = eft.benchmark._run

    def run_until_probe(name, *args, **kwargs):
        ran.append(name)
        if name == "probe":
            raise KeyboardInterrupt
        return run(name, *args, **kwargs)

    def no_tuning(*args, **kwargs):
        raise AssertionError("the finished tuning was run again")

    monkeypatch.setattr(eft.benchmark, "tune", no_tuning)
    monkeypatch.setattr(eft.benchmark, "_run", run_until_probe)
    assert bench(out) == 130
    assert ran == ["bp", "eft", "eft_fused", "probe"]
    printed = capsys.readouterr().out
    assert "continuing the interrupted bench run" in printed and "(finished: tuning)" in printed
    assert "[bp] continuing from its checkpoint after BP epoch 2" in printed
    ran.clear()
    monkeypatch.setattr(
        eft.benchmark, "_run", lambda name, *a, **k: ran.append(name) or run(name, *a, **k)
    )
    assert bench(out) == 0
    assert ran == ["probe"]  # tuning, bp, eft (with the head comparison), eft_fused kept
    assert not checkpoint.exists()

    reference = json.loads((reference_dir / "bench_news.json").read_text())
    resumed = json.loads((out / "bench_news.json").read_text())
    assert "resumed" not in reference
    assert resumed["resumed"]["parts_from_earlier_process"] == [
        "tuning",
        "bp",
        "eft",
        "heads",
        "eft_fused",
    ]
    assert resumed["resumed"]["fits_continued_after_epoch"] == {"bp": 2}
    assert resumed["resumed"]["tuning_continued_after_epochs"] == 1
    assert len(resumed["resumed"]["processes"]) == 4 and resumed["resumed"]["same_machine"]
    markdown = (out / "bench_news.md").read_text()
    assert "Resumed after an interruption (4 processes, same machine)" in markdown
    assert "tuning epochs 1-1" in markdown

    def untimed(tuning):  # the rows without their times
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in tuning["epochs"]]

    assert untimed(resumed["tuning"]) == untimed(reference["tuning"])
    row_seconds = sum(row["seconds"]["total"] for row in resumed["tuning"]["epochs"])
    assert resumed["tuning"]["epochs_seconds"] == pytest.approx(row_seconds)
    assert "summed over its rows" in (out / "bench_news.md").read_text()
    for name, method in reference["methods"].items():
        again = resumed["methods"][name]
        assert again["test_score"] == method["test_score"], name
        assert again.get("p_value_vs_bp") == method.get("p_value_vs_bp"), name
        assert again["hyper_parameters"] == method["hyper_parameters"], name
    bp = resumed["methods"]["bp"]
    assert bp["validation_curve"] == reference["methods"]["bp"]["validation_curve"]
    assert len(bp["bp_epoch_seconds"]) == bp["bp_epochs_run"] >= 3  # the first two kept
    assert sum(bp["bp_epoch_seconds"]) == pytest.approx(bp["phases"]["bp"])
    _, predictions = read_predictions(out / resumed["predictions_file"])
    assert predictions == read_predictions(reference_dir / reference["predictions_file"])[1]
    # a folder of that name that is not a bench checkpoint is not taken over
    checkpoint.mkdir()
    (checkpoint / "notes.txt").write_text("mine")
    assert bench(out) == 2
    assert "in the way" in capsys.readouterr().err and (checkpoint / "notes.txt").is_file()


def test_bench_takes_bad_rows_as_its_message_says(tmp_path):
    """The bad-row message names --bad-rows skip; eft bench takes it (and its default leaves
    the resume fingerprint of earlier runs unchanged)."""
    from eft.benchmark import _run_digest, _splits_from_args
    from eft.cli import build_parser

    files = []
    for name in ("train", "validation", "test"):
        path = tmp_path / f"{name}.csv"
        path.write_text("text,label\ngood film,pos\n,neg\nbad film,neg\n", encoding="utf-8")
        files += [f"--{name}", str(path)]
    args = build_parser().parse_args(["bench", *files])
    with pytest.raises(InputError, match=r"\(--bad-rows skip\)"):
        _splits_from_args(args)
    skipping = build_parser().parse_args(["bench", *files, "--bad-rows", "skip"])
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        train, *_ = _splits_from_args(skipping)
    assert train.texts == ["good film", "bad film"]
    older = build_parser().parse_args(["bench", *files])
    del older.bad_rows  # as an eft before the option parsed it
    assert _run_digest(older, [train]) == _run_digest(args, [train])
    assert _run_digest(skipping, [train]) != _run_digest(args, [train])


def test_ctrl_c_while_bench_reads_its_data_says_so(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data loads exited 130 without a word (later, the message names the
    kept parts)."""
    import eft.benchmark
    from eft.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eft.benchmark, "_splits_from_args", interrupted)
    output = tmp_path / "results"
    assert main(["bench", "--dataset", "trec", "--output-dir", str(output)]) == 130
    assert "interrupted while reading the data; nothing was written" in capsys.readouterr().err
    assert not output.exists()


def test_bench_refuses_options_that_would_do_nothing(tmp_path):
    """--k 0 (the probe row is k = 0), EFT's values beside --tune (it chooses them) and the
    tuner's options without --tune were accepted and ignored, or named a config field."""
    from eft.benchmark import check_options
    from eft.cli import build_parser, main

    def args(*options: str):
        return build_parser().parse_args(["bench", "--dataset", "trec", *options])

    for options, message in (
        (["--k", "0"], "--k 0: EFT's BP epochs must be >= 1"),
        (
            ["--tune", "--n-hidden", "500", "--C", "10"],
            "--tune chooses k, n_hidden and C: drop --n-hidden, --C",
        ),
        (["--tune-selection", "one_se"], "set the tuner of --tune; add --tune"),
    ):
        with pytest.raises(InputError, match=message):
            check_options(args(*options))
    check_options(args("--tune", "--tune-selection", "one_se"))
    from eft.benchmark import _bench_paths

    with pytest.raises(InputError, match="--tag 'x/y' names the result files, not a folder"):
        _bench_paths(args("--tag", "x/y"))
    assert _bench_paths(args("--tag", "x"))[2] == "bench_trec_x"
    check_options(args("--k", "2", "--n-hidden", "500"))
    # an input error leaves no output folder (nor its new parents) behind
    files = []
    for name in ("train", "validation", "test"):
        path = tmp_path / f"{name}.csv"
        path.write_text("text,label\ngood film,pos\nbad film,neg\n", encoding="utf-8")
        files += [f"--{name}", str(path)]
    (tmp_path / "not-a-model").mkdir()
    output = tmp_path / "new" / "results"
    command = ["bench", *files, "--model", str(tmp_path / "not-a-model"), "--quiet"]
    assert main([*command, "--output-dir", str(output)]) == 2
    assert not (tmp_path / "new").exists()
