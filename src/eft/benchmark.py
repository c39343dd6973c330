"""Side-by-side benchmark: standard fine-tuning against EFT, in ONE run on one machine.

    eft bench --dataset trec [--tune] [--k 1 --n-hidden 1000 --C 1] [--output-dir DIR]
        [--max-train N] [--max-validation N] [--max-test N] [--max-length 128] [--model M]
    eft bench --train train.csv --validation dev.csv --test test.csv [--metric macro_f1] ...
    eft bench --train tags.jsonl --validation dev.jsonl --test test.jsonl --multi-label ...

(``python benchmarks/bench_eft.py`` is the same command, writing to ``benchmarks/results``.)
AG News without its train file (as in this repository's data) uses the test split divided
80/20 with seed 42 (``test_fraction=0.2``), 10% of the 80% held out for validation.

Methods, all with the same data pipeline (:class:`~eft.EFTClassifier`) and seed:

1. ``bp``: standard fine-tuning (linear head kept, linear learning-rate decay), up to 10
   epochs, early stopping on the validation score with patience 2. ``train_seconds`` counts
   every epoch it trained, as the paper counts its baselines; ``train_seconds_to_best`` only
   those up to its best epoch. Its validation passes after every epoch are timed apart
   (``validation_seconds``) and not counted, which favours it. Its learning rate is
   ``--baseline-learning-rate`` (default: that of ``--learning-rate``, else ``EFTConfig``'s
   default for method "bp", 5e-5);
   ``--extra-baseline-learning-rates`` adds rows ``bp_lr<rate>``;
2. ``eft``: k BP epochs + feedforward + I-ELM head (``--tune`` first runs :func:`eft.tuning.tune`
   and uses its k, n_hidden and C, with the tuner's learning-rate schedule; the tuning time is
   reported apart); the learning rate is ``--learning-rate`` or ``EFTConfig``'s default for
   EFT, 2e-4;
3. ``eft_fused``: the same in fused mode (I-ELM statistics from the last BP epoch);
4. ``probe``: k = 0, the frozen encoder + I-ELM head;
5. ``logreg_head``: scikit-learn ``LogisticRegression`` on the EFT encoder's features, against
   the I-ELM head on the same features (head fit times side by side). Beside a tuned head it
   also tests the default head (n_hidden 1000, C 1) and, with ``--tune``, the head that each
   ``--tune-selection`` rule picks at EFT's k (``ielm_heads_by_selection``), so one run compares
   the rules' heads on test without more fine-tuning.

Multi-label files (``--multi-label``: label lists, or cells split on ``--label-separator``)
run the same methods with a sigmoid per label; the score and the bootstrap's is the subset
accuracy (every label of a text right), micro and macro F1 are in each method's ``scores``, and
``logreg_head`` fits one ``LogisticRegression`` per label (``OneVsRestClassifier``).

Each method reports its test score (the dataset's paper metric and accuracy), training time
per phase, the ratio to the baseline's time and the paired-bootstrap p-value of "worse than the
baseline". Writes ``bench_<dataset>[_<tag>].json`` and ``.md``; the test labels and every
method's test predictions in ``..._predictions.jsonl`` (for further paired tests, e.g. by
``benchmarks/rule_choice.py``); and, with matplotlib, ``*.png`` (per-phase time bars; test
score against training time; with ``--tune``, validation score against k and n_hidden).

An interrupted run (Ctrl-C, a lost session) continues where it stopped when the same command
is run again: ``<output-dir>/<stem>.checkpoint/`` keeps every finished part (the tuning, each
method's record and test predictions, the head comparison), the tuning's own checkpoint and the
encoder checkpoint of the fit in progress (after each of its BP epochs; written outside the
timed epochs). Training resumes exactly, so a continued run has the scores of an uninterrupted
one; its times are sums of per-epoch times, some measured by the earlier process, which the
results say (``resumed``). The folder goes when the run finishes; ``--no-checkpoint`` keeps none.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eft import datasets
from eft.atomic import json_default, write_text
from eft.checkpoint import RunProgress, json_digest, resumable_fit
from eft.classifier import EFTClassifier, encode_labels
from eft.config import MIXED_PRECISION, EFTConfig
from eft.errors import InputError
from eft.ielm import IELMClassifier
from eft.metrics import (
    METRICS,
    classification_scores,
    label_set_keys,
    multi_label_scores,
    paired_bootstrap,
)
from eft.provenance import load_average, machine_info, machine_markdown
from eft.tuning import SELECTIONS, TuneResult, choose, finished_epochs, tune, write_tuning

METRIC = {"meld": "weighted_f1", "iemocap": "weighted_f1", "ag_news": "error"}
DEFAULT_OUTPUT_DIR = "benchmarks/results"
BASELINE_MAX_EPOCHS = 10
BASELINE_PATIENCE = 2
# options that do not change what a run measures: left out of its resume fingerprint
_NOT_MEASURED = ("quiet", "output_dir", "no_checkpoint", "command")

#: EFT's k, n_hidden and C without ``--tune`` (their option defaults), and the defaults of the
#: tuner's options: ``check_options`` refuses the first changed beside ``--tune`` and the
#: second without it.
EFT_WITHOUT_TUNING: dict[str, Any] = {"k": 1, "n_hidden": 1000, "C": 1.0}
TUNER_DEFAULTS: dict[str, Any] = {"tune_max_epochs": 6, "tune_selection": "best"}


def load_splits(
    dataset: str,
    data_dir: str | Path | None = None,
    max_train: int | None = None,
    max_validation: int | None = None,
    max_test: int | None = None,
) -> tuple[datasets.Split, datasets.Split, datasets.Split, dict[str, Any]]:
    """Train, validation and test splits of a named dataset as the benchmark uses them, and
    the loader options it chose (TREC: 10% of train for validation; AG News without its train
    file: the test split divided 80/20). ``max_*`` subsample with seed 0."""
    root = datasets.resolve_data_dir(data_dir)
    dataset = datasets.canonical_name(dataset)  # "TREC", "agnews": the options below apply
    options: dict[str, Any] = {}
    if dataset == "trec":
        options["validation_fraction"] = 0.1
    if dataset == "ag_news" and not any(
        (root / "ag_news" / name).is_file() for name in ("train.csv", "train.csv.gz")
    ):
        options["test_fraction"] = 0.2  # the train split is not available: test 80/20
    data = datasets.load(dataset, data_dir=root, **options)
    splits = data["train"], data["validation"], data["test"]
    return (*_subsample(splits, (max_train, max_validation, max_test)), options)


def _subsample(
    splits: Sequence[datasets.Split], limits: Sequence[int | None]
) -> tuple[datasets.Split, ...]:
    """Each split cut to its limit (random rows, seed 0); a split within its limit is kept."""
    return tuple(  # subsample refuses 0 and negative limits (0 kept every row)
        datasets.subsample(split, limit, seed=0) if limit is not None else split
        for split, limit in zip(splits, limits, strict=True)
    )


def load_file_splits(
    train: str | Path,
    validation: str | Path,
    test: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_separator: str | None = None,
    bad_rows: str = "error",
) -> tuple[datasets.Split, datasets.Split, datasets.Split]:
    """Your own train, validation and test files (CSV, TSV or JSONL, optionally ``.gz``);
    with ``text_pair_column``, every text is a ``(text, text_pair)`` pair; with
    ``label_separator``, every label a set of labels (multi-label); ``bad_rows`` as
    :func:`eft.datasets.read_labeled_file` takes it."""
    return tuple(
        datasets.Split(
            *datasets.read_labeled_file(
                path,
                text_column,
                label_column,
                bad_rows=bad_rows,
                text_pair_column=text_pair_column,
                label_separator=label_separator,
            )
        )
        for path in (train, validation, test)
    )


def add_bad_rows(parser: argparse.ArgumentParser | argparse._ArgumentGroup, rows: str) -> None:
    """``--bad-rows``: what to do with ``rows`` (the bad ones of the command's files)."""
    parser.add_argument(
        "--bad-rows",
        choices=("error", "skip"),
        default="error",
        help=f"{rows}: fail, or skip them with a count",
    )


def add_text_pair_column(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--text-pair-column``, shared by ``eft bench`` and the other commands that read files."""
    parser.add_argument(
        "--text-pair-column",
        help="second text column for sentence-pair tasks (NLI, paraphrase): each example is "
        "the pair, encoded as tokenizer(text, text_pair) encodes it",
    )


def add_multi_label(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--multi-label`` and ``--label-separator``, shared by ``eft train``, ``eft tune`` and
    ``eft bench``."""
    parser.add_argument(
        "--multi-label",
        action="store_true",
        help="each text has a set of labels (none, one or several): JSONL label lists, or "
        "label cells split on --label-separator; a sigmoid per label in the BP stage, the "
        "I-ELM onto 0/1 rows, a label predicted when its probability passes 0.5, accuracy "
        "as subset accuracy (every label of a text right)",
    )
    add_label_separator(parser)


def add_label_separator(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, saved: bool = False
) -> None:
    """``--label-separator``; ``saved``: a saved model's command, whose default is the
    separator the model was trained with."""
    default = "the model's training separator, else ','" if saved else "','"
    parser.add_argument(
        "--label-separator",
        default=None if saved else ",",
        help="multi-label models: the separator of the labels in a CSV/TSV label cell "
        f'("sports,politics"; JSONL files may hold lists instead; default: {default})',
    )


def refuse_text_pairs_of_dataset(
    dataset: str | None, text_pair_column: str | None, files: str
) -> None:
    """``--text-pair-column`` names a column of ``files``; a named dataset holds single texts."""
    if dataset and text_pair_column:
        raise InputError(
            f"--text-pair-column reads a second text column of {files}; the {dataset} dataset "
            "holds single texts."
        )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset, model and size options that :func:`load_splits` reads."""
    parser.add_argument("--dataset", help="meld, trec, sst2, imdb, ag_news, ...")
    parser.add_argument("--data-dir", help="root of the datasets (default: $EFT_DATA_DIR)")
    parser.add_argument("--model", help="encoder: local path or hub id (default: embedded MiniLM)")
    parser.add_argument("--max-train", type=int, help="train on N random examples")
    parser.add_argument("--max-validation", type=int, help="validate on N random examples")
    parser.add_argument("--max-test", type=int, help="evaluate on N random test examples")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``eft bench``."""
    add_data_arguments(parser)
    files = parser.add_argument_group(
        "your own data (instead of --dataset; all three files are needed)"
    )
    files.add_argument("--train", help="training file: CSV, TSV or JSONL (optionally .gz)")
    files.add_argument("--validation", help="validation file (early stopping and --tune)")
    files.add_argument("--test", help="test file")
    files.add_argument("--text-column", default="text", help="column (or JSON key) of the text")
    add_text_pair_column(files)
    files.add_argument("--label-column", default="label", help="column (or JSON key) of the label")
    add_multi_label(files)
    add_bad_rows(files, "rows with empty text or a missing label")
    files.add_argument("--name", help="name in the results (default: the train file's folder)")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        help="test metric (default: the paper's for the dataset, else accuracy; multi-label: "
        "accuracy, the subset accuracy)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"training batch size of every method (default {EFTConfig.batch_size})",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="every method's (default: EFTConfig's default)"
    )
    parser.add_argument(
        "--baseline-learning-rate",
        type=float,
        help="the bp baseline's learning rate, when it differs from --learning-rate",
    )
    parser.add_argument(
        "--extra-baseline-learning-rates",
        type=float,
        nargs="*",
        default=[],
        help="also run the bp baseline at these rates (rows bp_lr<rate>, compared to bp)",
    )
    given = EFT_WITHOUT_TUNING
    parser.add_argument(
        "--k", type=int, default=given["k"], help="EFT's BP epochs (without --tune)"
    )
    parser.add_argument(
        "--n-hidden", type=int, default=given["n_hidden"], help="I-ELM width (without --tune)"
    )
    parser.add_argument("--C", type=float, default=given["C"], help="I-ELM C (without --tune)")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="choose k, n_hidden, C first (eft tune; on validation weighted F1 when that is "
        "the metric, else accuracy)",
    )
    parser.add_argument(
        "--tune-max-epochs",
        type=int,
        default=TUNER_DEFAULTS["tune_max_epochs"],
        help="with --tune: the most BP epochs k it tries (the paper's 1-6; default 6)",
    )
    parser.add_argument(
        "--tune-selection",
        choices=SELECTIONS,
        default=TUNER_DEFAULTS["tune_selection"],
        help="with --tune: k and head with the best validation score (the paper, best), "
        "the fewest epochs and then the smallest n_hidden within one standard error of it "
        "(one_se), the paper's k and then that smallest n_hidden (one_se_head), or one_se's "
        "k and then the best head at that k (one_se_epoch)",
    )
    parser.add_argument(
        "--fused-fraction",
        type=float,
        default=EFTConfig.fused_fraction,
        help="eft_fused's share of the last BP epoch that feeds the I-ELM; the earlier steps' "
        f"samples get a feature pass (default {EFTConfig.fused_fraction:g}: no pass)",
    )
    parser.add_argument("--seed", type=int, default=42, help="every method's seed")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--mixed-precision",
        choices=MIXED_PRECISION,
        default="auto",
        help="every method's (auto: bf16 on a GPU that supports it, float32 elsewhere; bf16 "
        "on a CPU only when named, where it may be emulated and slow)",
    )
    parser.add_argument(
        "--inference-precision",
        choices=("same", *MIXED_PRECISION),
        default="same",
        help="every method's autocast of the feature pass, validation and test predictions "
        "only (same: as --mixed-precision)",
    )
    parser.add_argument(
        "--tag", help="results go to bench_<dataset>_<tag>.* (a variant beside the main run)"
    )
    parser.add_argument(
        "--output-dir", help=f"folder for the results (default: {DEFAULT_OUTPUT_DIR})"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="keep no '<stem>.checkpoint' folder (by default an interrupted run continues when "
        "the same command is run again)",
    )


def _run(
    name: str,
    config: EFTConfig,
    train,
    validation,
    test,
    metric: str,
    checkpoint: Path | None = None,
):
    """Train one method, score it on test; with ``checkpoint``, its BP stage saves there after
    every epoch and continues from there when an earlier run left a checkpoint."""
    with_validation = config.method == "bp"
    config, resume, done = resumable_fit(config, checkpoint)
    if done is not None:
        print(f"[{name}] continuing from its checkpoint after BP epoch {done}", flush=True)
    clf = EFTClassifier(config).fit(
        list(train.texts),
        list(train.labels),
        list(validation.texts) if with_validation else None,
        list(validation.labels) if with_validation else None,
        resume_from=resume,
    )
    predictions, scores = _test_scores(clf.classes_, clf.predict(list(test.texts)), test)
    history = clf.history_
    to_best = history.get("bp_seconds_to_best", clf.timings_["bp"])
    record = {
        "name": name,
        "test_score": scores[metric],
        "test_accuracy": scores["accuracy"],
        "scores": scores,
        "train_seconds": clf.timings_["train"],
        "train_seconds_to_best": to_best + clf.timings_["feedforward"] + clf.timings_["elm"],
        "phases": {k: clf.timings_.get(k, 0.0) for k in ("bp", "feedforward", "elm")},
        "bp_epochs_run": len(history.get("bp_epoch_seconds", [])),
        "bp_epoch_seconds": history.get("bp_epoch_seconds", []),
        # fine-tuning's per-epoch validation passes (early stopping): timed apart, not counted
        "validation_seconds": clf.timings_.get("evaluation", 0.0),
        "bp_best_epoch": history.get("bp_best_epoch"),
        "validation_curve": history.get("bp_validation_accuracy", []),
        "hyper_parameters": {
            k: getattr(config, k)
            for k in (
                "method",
                "bp_epochs",
                "learning_rate",
                "lr_schedule",
                "batch_size",
                "max_length",
                "n_hidden",
                "C",
                "elm_from_last_epoch",
                "fused_fraction",
                "early_stopping_patience",
                "mixed_precision",
                "inference_precision",
                "seed",
            )
        },
        "predictions": predictions,
    }
    if done is not None:
        record["continued_after_epoch"] = done  # earlier epochs timed by an earlier process
    print(
        f"[{name}] {metric} {scores[metric]:.2f}, train {record['train_seconds']:.1f} s", flush=True
    )
    return record, clf


def _test_scores(classes: np.ndarray, predicted: np.ndarray, test) -> tuple[list[Any], dict]:
    """Test predictions as written to the predictions file, and their scores: labels, or
    (multi-label: a 0/1 matrix) each text's labels in ``classes`` order and the multi-label
    scores, whose ``accuracy`` is the subset accuracy."""
    if predicted.ndim == 1:
        predictions = predicted.tolist()
        return predictions, classification_scores(list(test.labels), predictions)
    _, truth = encode_labels(list(test.labels), classes, "test")
    predictions = [classes[row == 1].tolist() for row in predicted]
    return predictions, multi_label_scores(truth, predicted)


def _head_comparison(
    clf: EFTClassifier,
    train,
    test,
    metric: str,
    heads_by_selection: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """I-ELM head against ``LogisticRegression`` on the same fine-tuned features, fit times
    side by side; beside a tuned head, the default-size head and the heads that the other
    tuning rules pick at the same k (``heads_by_selection``: rule -> head parameters).
    Each head's fit seconds and test score by name; their test predictions under
    ``"predictions"``."""
    from sklearn.linear_model import LogisticRegression

    X_train, X_test = clf.features(list(train.texts)), clf.features(list(test.texts))
    if clf.multi_label_:  # a 0/1 matrix; LogisticRegression: one per label
        from sklearn.multiclass import OneVsRestClassifier

        y_train = encode_labels(list(train.labels), clf.classes_, "training")[1]
    else:
        y_train = np.asarray(train.labels)
    cfg = clf.config

    def ielm(params: dict[str, Any]) -> IELMClassifier:
        return IELMClassifier(
            n_hidden=int(params["n_hidden"]),
            C=float(params["C"]),
            activation=params.get("activation", cfg.activation),
            n_iter=cfg.n_iter,
            standardize=params.get("standardize", cfg.standardize),
            random_state=cfg.seed,
        )

    def logreg() -> Any:
        head = LogisticRegression(max_iter=1000)
        return OneVsRestClassifier(head) if clf.multi_label_ else head

    heads = {"ielm": lambda: ielm({"n_hidden": cfg.n_hidden, "C": cfg.C}), "logreg": logreg}
    if (cfg.n_hidden, cfg.C) != (1000, 1.0):  # tuned: the defaults beside them
        heads["ielm_default"] = lambda: ielm({"n_hidden": 1000, "C": 1.0})
    for selection, params in (heads_by_selection or {}).items():
        heads[f"selection:{selection}"] = lambda params=params: ielm(params)
    results: dict[str, Any] = {"predictions": {}}
    for name, make in heads.items():
        start = time.perf_counter()
        head = make().fit(X_train, y_train)
        seconds = time.perf_counter() - start
        predictions, scores = _test_scores(clf.classes_, head.predict(X_test), test)
        results["predictions"][name] = predictions
        results[name] = {
            "fit_seconds": seconds,
            "test_score": scores[metric],
            "test_accuracy": scores["accuracy"],
        }
    results["speedup_ielm_over_logreg"] = results["logreg"]["fit_seconds"] / max(
        results["ielm"]["fit_seconds"], 1e-9
    )
    return results


def _heads_by_selection(tuned: TuneResult, n_eval: int) -> dict[str, dict[str, Any]]:
    """The head (activation, standardisation, n_hidden, C and validation score) that every
    tuning rule picks on the tuning row that EFT was trained with, for the rules that pick
    that row: their heads can be tested on EFT's features without more fine-tuning."""
    used = tuned.best_config
    heads = {}
    for selection in SELECTIONS:
        row, score, params, _ = choose(tuned.epochs, n_eval, tuned.scoring, selection)
        if (row["learning_rate"], row["pooling"], row["epoch"]) == (
            used.learning_rate,
            used.pooling,
            used.bp_epochs,
        ):
            fields = ("activation", "standardize", "n_hidden", "C")
            heads[selection] = {**{f: params[f] for f in fields}, "validation_score": score}
    return heads


def _plots(payload: dict[str, Any], stem: str, output_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    methods = {k: v for k, v in payload["methods"].items() if "phases" in v}
    files = []
    figure, axis = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(methods))
    for phase in ("bp", "feedforward", "elm"):
        values = np.array([m["phases"][phase] for m in methods.values()])
        axis.bar(list(methods), values, bottom=bottom, label=phase)
        bottom += values
    axis.set(ylabel="seconds", title=f"{payload['dataset']}: training time per phase")
    axis.legend()
    figure.tight_layout()
    files.append(f"{stem}_phases.png")
    figure.savefig(output_dir / files[-1], dpi=120)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, m in methods.items():
        axis.scatter(m["train_seconds"], m["test_score"], label=name, s=50)
    axis.set(
        xlabel="training seconds",
        ylabel=f"test {payload['metric']}",
        title=f"{payload['dataset']}: score against training time",
    )
    axis.legend()
    figure.tight_layout()
    files.append(f"{stem}_score_vs_time.png")
    figure.savefig(output_dir / files[-1], dpi=120)
    plt.close(figure)
    if payload.get("tuning"):
        tuning = payload["tuning"]
        result = TuneResult(
            best_config=EFTConfig.from_dict(tuning["config"]),
            best_score=tuning["best_score"],
            scoring=tuning["scoring"],
            epochs=tuning["epochs"],
            selection=tuning.get("selection", "best"),
        )
        write_tuning(result, output_dir / f"{stem}_tuning")
        files.append(f"{stem}_tuning/tuning.png")
    return files


def _markdown(payload: dict[str, Any]) -> str:
    metric = payload["metric"]
    lines = [
        f"# EFT against standard fine-tuning on {payload['dataset']} (`eft bench`)",
        "",
        machine_markdown(payload["machine"]),
        f"- Sizes: {payload['sizes']}; metric: {metric}; data options: "
        f"{payload['dataset_options']}",
        "",
    ]
    if "resumed" in payload:
        resumed = payload["resumed"]
        earlier = [
            *resumed["parts_from_earlier_process"],
            *(f"{m} epochs 1-{e}" for m, e in resumed["fits_continued_after_epoch"].items()),
        ]
        if resumed["tuning_continued_after_epochs"]:
            earlier.append(f"tuning epochs 1-{resumed['tuning_continued_after_epochs']}")
        lines[-1:-1] = [
            f"- Resumed after an interruption ({len(resumed['processes'])} processes, "
            f"{'same machine' if resumed['same_machine'] else 'DIFFERENT machines'}); measured "
            f"by an earlier process: {', '.join(earlier) or 'nothing'}. Times are sums of "
            "per-epoch and per-phase times."
        ]
    lines += [
        "| method | test " + metric + " | accuracy | train s | ratio to bp | ratio to bp best "
        "| p (not worse than bp) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any, digits: int) -> str:
        """A number, or "-" where the method has none (bp's p-value against itself)."""
        if value is None or not math.isfinite(value):
            return "-"
        return f"{value:.{digits}f}"

    for name, m in payload["methods"].items():
        lines.append(
            f"| {name} | {m['test_score']:.2f} | {cell(m.get('test_accuracy'), 2)} | "
            f"{m['train_seconds']:.1f} | {cell(m.get('time_ratio_to_bp'), 3)} | "
            f"{cell(m.get('time_ratio_to_bp_best'), 3)} | {cell(m.get('p_value_vs_bp'), 3)} |"
        )
    if payload.get("multi_label"):
        f1 = "; ".join(
            f"{name} {m['scores']['micro_f1']:.2f} / {m['scores']['macro_f1']:.2f}"
            for name, m in payload["methods"].items()
            if "scores" in m
        )
        lines += [
            "",
            "Multi-label: accuracy is the subset accuracy (every label of a text right), and p "
            f"compares it. Micro / macro F1: {f1}.",
        ]
    tuning = payload.get("tuning")
    if tuning and "epochs_seconds" in tuning:  # (a tuning kept by an older eft has none)
        last = max(row["epoch"] for row in tuning["epochs"])
        lines += [
            "",
            f"Tuning (`--tune`, apart from the methods' times): {len(tuning['epochs'])} rows over "
            f"epochs 1-{last}, {tuning['epochs_seconds']:.1f} s summed over its rows "
            f"({tuning['seconds']:.1f} s in the process that finished it).",
        ]
    head = payload["methods"]["logreg_head"]
    lines += [
        "",
        f"Head on the same EFT features: I-ELM {head['ielm_head_seconds']:.2f} s "
        f"({head['ielm_head_test_score']:.2f}) against LogisticRegression "
        f"{head['train_seconds']:.2f} s ({head['test_score']:.2f}): "
        f"{head['speedup_ielm_over_logreg']:.1f}x.",
    ]
    if head["ielm_default_head"]:
        default = head["ielm_default_head"]
        lines[-1] += (
            f" With the default n_hidden 1000 and C 1 instead of the "
            f"{'tuned' if tuning else 'given'} values: "
            f"{default['fit_seconds']:.2f} s ({default['test_score']:.2f}), "
            f"{head['train_seconds'] / max(default['fit_seconds'], 1e-9):.1f}x."
        )
    by_selection = head.get("ielm_heads_by_selection")
    if by_selection:
        picks = "; ".join(
            f"{selection} (nh {h['n_hidden']}, C {h['C']:g}; validation "
            f"{100 * h['validation_score']:.1f}): {h['test_score']:.2f}, {h['fit_seconds']:.2f} s"
            for selection, h in by_selection.items()
        )
        lines += ["", f"The head each tuning rule picks at the same k, same features: {picks}."]
    return "\n".join(lines)


def write_report(output_dir: str | Path, stem: str, payload: dict[str, Any], markdown: str):
    """Write ``<stem>.json`` and ``<stem>.md`` atomically; returns both paths."""
    output_dir = Path(output_dir)
    paths = output_dir / f"{stem}.json", output_dir / f"{stem}.md"
    write_text(paths[0], json.dumps(payload, indent=2, default=json_default) + "\n")
    write_text(paths[1], markdown.rstrip() + "\n")
    return paths


def write_predictions(
    path: str | Path, labels: Sequence[Any], predictions: dict[str, Sequence[Any]]
) -> Path:
    """Write the test labels and each method's test predictions as JSON lines, atomically:
    ``{"test_labels": [...]}`` first, then one ``{"method": name, "predictions": [...]}``."""
    lines = [json.dumps({"test_labels": list(labels)}, default=json_default)]
    lines += [
        json.dumps({"method": name, "predictions": list(values)}, default=json_default)
        for name, values in predictions.items()
    ]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_predictions(path: str | Path) -> tuple[list[Any], dict[str, list[Any]]]:
    """The test labels and ``{method: predictions}`` of :func:`write_predictions`."""
    first, *rest = (json.loads(line) for line in Path(path).read_text("utf-8").splitlines())
    return first["test_labels"], {row["method"]: row["predictions"] for row in rest}


def _splits_from_args(args: argparse.Namespace):
    files = [args.train, args.validation, args.test]
    if args.dataset and any(files):
        raise InputError("Give --dataset NAME or --train/--validation/--test files, not both.")
    if not args.dataset and not all(files):
        raise InputError(
            "Give --dataset NAME, or all of --train, --validation and --test (the baseline "
            "stops early on validation; every method is scored on test)."
        )
    pair_column = getattr(args, "text_pair_column", None)  # benches of older runs lack it
    refuse_text_pairs_of_dataset(args.dataset, pair_column, "--train/--validation/--test files")
    multi_label = getattr(args, "multi_label", False)  # and this
    if multi_label and args.dataset:
        raise InputError(
            f"--multi-label reads label sets from --train/--validation/--test files; the "
            f"{args.dataset} dataset has one label per text."
        )
    if multi_label and args.metric not in (None, "accuracy"):
        raise InputError(
            f"A multi-label bench scores the subset accuracy (--metric accuracy); micro and "
            f"macro F1 are in each method's scores. --metric {args.metric} is for one label "
            f"per text."
        )
    if args.dataset:
        return load_splits(
            args.dataset, args.data_dir, args.max_train, args.max_validation, args.max_test
        )
    separator = args.label_separator if multi_label else None
    splits = load_file_splits(
        *files,
        args.text_column,
        args.label_column,
        pair_column,
        label_separator=separator,
        bad_rows=getattr(args, "bad_rows", "error"),  # benches of older runs lack it
    )
    limits = (args.max_train, args.max_validation, args.max_test)
    return (*_subsample(splits, limits), {"files": [str(Path(f)) for f in files]})


def run_header(
    args: argparse.Namespace,
    name: str,
    metric: str,
    splits: Sequence[datasets.Split],
    dataset_options: dict[str, Any],
) -> dict[str, Any]:
    """The first fields of a results file: what was run on which data, on which machine."""
    train, validation, test = splits
    return {
        "dataset": name,
        "model": args.model or "all-MiniLM-L6-v2 (embedded)",
        "metric": metric,
        "seed": args.seed,
        "machine": machine_info(),
        "sizes": {"train": len(train), "validation": len(validation), "test": len(test)},
        "multi_label": getattr(args, "multi_label", False),  # benches of older runs lack it
        "dataset_options": {
            **dataset_options,
            "max_train": args.max_train,
            "max_validation": args.max_validation,
            "max_test": args.max_test,
            "max_length": args.max_length,
        },
    }


def _run_digest(args: argparse.Namespace, splits: Sequence[datasets.Split]) -> str:
    """What decides a bench run's results: its options and data. Options not given (None)
    are left out, so that a run interrupted under an eft without a newer option (which
    defaults to None) continues under one with it."""
    options = {k: v for k, v in vars(args).items() if k not in _NOT_MEASURED and v is not None}
    if not options.get("multi_label"):  # as before multi-label benches: single-label runs'
        options.pop("multi_label", None)  # fingerprints unchanged
        options.pop("label_separator", None)
    if options.get("bad_rows") == "error":  # the default, as before the option: unchanged
        options.pop("bad_rows")
    columns = [list(part) for split in splits for part in (split.texts, split.labels)]
    return json_digest(options, *columns)


def _bench_paths(args: argparse.Namespace) -> tuple[str, Path, str]:
    """The run's title, output folder and file stem."""
    title = args.name or args.dataset or Path(args.train).resolve().parent.name or "data"
    for option, value in (("--name", args.name), ("--tag", args.tag)):
        if value and ("/" in value or "\\" in value or value in (".", "..")):
            raise InputError(
                f"{option} {value!r} names the result files, not a folder: leave out the path "
                "separators (the folder is --output-dir)."
            )
    output_dir = Path(args.output_dir or DEFAULT_OUTPUT_DIR)
    return title, output_dir, f"bench_{title}" + (f"_{args.tag}" if args.tag else "")


def check_options(args: argparse.Namespace) -> None:
    """Options that would do nothing are refused: EFT's k, n_hidden and C with ``--tune``
    (it chooses them), the tuner's options without it, and k < 1 (k = 0 is the probe row)."""
    if args.k < 1:
        raise InputError(
            f"--k {args.k}: EFT's BP epochs must be >= 1 (k = 0, the frozen encoder with an "
            "I-ELM head, is the bench's probe row)."
        )
    if args.tune:
        given = [n for n, value in EFT_WITHOUT_TUNING.items() if getattr(args, n) != value]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise InputError(f"--tune chooses k, n_hidden and C: drop {options}.")
    elif any(getattr(args, name) != value for name, value in TUNER_DEFAULTS.items()):
        raise InputError(
            "--tune-max-epochs and --tune-selection set the tuner of --tune; add --tune, or "
            "drop them (without --tune, --k, --n-hidden and --C give EFT's values)."
        )


def canonical_dataset(args: argparse.Namespace) -> None:
    """``--dataset`` as :data:`eft.datasets.DATASETS` spells it (``TREC``, ``agnews``): its
    splits, its paper metric and the names of the files written follow the dataset."""
    if args.dataset:
        args.dataset = datasets.canonical_name(args.dataset)


def bench_checkpoint_dir(args: argparse.Namespace) -> Path | None:
    """Where ``eft bench`` keeps an interrupted run (None with ``--no-checkpoint``)."""
    _, output_dir, stem = _bench_paths(args)
    return None if args.no_checkpoint else output_dir / f"{stem}.checkpoint"


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run every method of the module docstring; write and return the results."""
    check_options(args)
    canonical_dataset(args)
    try:
        train, validation, test, dataset_options = _splits_from_args(args)
    except KeyboardInterrupt:  # the callers exit 130 without a word of their own
        print("eft: interrupted while reading the data; nothing was written.", file=sys.stderr)
        raise
    title, output_dir, stem = _bench_paths(args)
    metric = args.metric or METRIC.get(args.dataset or "", "accuracy")
    checkpoint = bench_checkpoint_dir(args)
    progress = RunProgress.open(checkpoint, "bench", _run_digest(args, (train, validation, test)))
    if progress.continued:
        print(
            f"continuing the interrupted bench run in {checkpoint} (finished: "
            f"{', '.join(progress.kept) or 'nothing yet'})",
            flush=True,
        )
    try:
        payload = _run_methods(
            args, (train, validation, test), title, metric, dataset_options, progress
        )
    except KeyboardInterrupt:
        if progress.folder is not None:
            print(
                f"eft: interrupted; finished parts and the fit in progress are kept in "
                f"{progress.folder}: run the same command again to continue.",
                file=sys.stderr,
            )
        raise
    if progress.continued:
        payload["resumed"] = {  # measured in part by an earlier process of this run
            **progress.resumed(),
            "fits_continued_after_epoch": {
                name: m["continued_after_epoch"]
                for name, m in payload["methods"].items()
                if "continued_after_epoch" in m
            },
            "tuning_continued_after_epochs": payload.get("tuning", {}).get(
                "continued_after_epochs"
            ),
        }
    truth = list(test.labels)
    bp = payload["methods"]["bp"]
    for name, method in payload["methods"].items():
        if name != "bp":
            test_result = paired_bootstrap(
                label_set_keys(truth),
                label_set_keys(bp["predictions"]),
                label_set_keys(method["predictions"]),
                metric=metric,
            )
            method["p_value_vs_bp"] = test_result["p_value_worse"]
            method["comparable_to_bp"] = test_result["comparable"]
        if "phases" in method:
            method["time_ratio_to_bp"] = method["train_seconds"] / bp["train_seconds"]
            method["time_ratio_to_bp_best"] = method["train_seconds"] / bp["train_seconds_to_best"]
    predictions = {name: method.pop("predictions") for name, method in payload["methods"].items()}
    payload["tag"] = args.tag
    payload["machine"]["load_average_at_end"] = load_average()
    output_dir.mkdir(parents=True, exist_ok=True)
    payload["predictions_file"] = f"{stem}_predictions.jsonl"
    write_predictions(output_dir / payload["predictions_file"], truth, predictions)
    payload["plots"] = _plots(payload, stem, output_dir)
    markdown = _markdown(payload)
    write_report(output_dir, stem, payload, markdown)
    progress.finish()
    lines = markdown.splitlines()  # the table and the notes after it
    print("\n".join(lines[next(i for i, x in enumerate(lines) if x.startswith("| method |")) :]))
    print(f"results written to {output_dir / stem}.json and .md")
    return payload


def _run_methods(
    args: argparse.Namespace,
    splits: Sequence[datasets.Split],
    title: str,
    metric: str,
    dataset_options: dict[str, Any],
    progress: RunProgress,
) -> dict[str, Any]:
    """The tuning (with ``--tune``), every method and the head comparison, each skipped where
    ``progress`` has it from an earlier process; the results payload, with test predictions."""
    train, validation, test = splits
    base: dict[str, Any] = {
        "model": args.model,
        "max_length": args.max_length,
        "seed": args.seed,
        "device": args.device,
        "mixed_precision": args.mixed_precision,
        "inference_precision": args.inference_precision,
        "progress": not args.quiet,
    }
    if args.batch_size is not None:
        base["batch_size"] = args.batch_size
    if args.learning_rate is not None:
        base["learning_rate"] = args.learning_rate
    baseline = dict(base)
    if args.baseline_learning_rate is not None:
        baseline["learning_rate"] = args.baseline_learning_rate
    payload = run_header(args, title, metric, splits, dataset_options)
    progress.add_process(payload["machine"])
    payload["methods"] = {}
    k, n_hidden, C = args.k, args.n_hidden, args.C
    by_selection: dict[str, dict[str, Any]] = {}
    if args.tune:
        if "tuning" not in progress.parts:
            folder = progress.part_folder("tuning")
            epochs_before = finished_epochs(folder) if folder is not None else 0
            start = time.perf_counter()
            tuned = tune(
                list(train.texts),
                list(train.labels),
                list(validation.texts),
                list(validation.labels),
                EFTConfig(**base),
                max_epochs=args.tune_max_epochs,
                scoring="weighted_f1" if metric == "weighted_f1" else "accuracy",
                selection=args.tune_selection,
                checkpoint_dir=folder,
            )
            record = {
                **tuned.to_dict(),
                "seconds": time.perf_counter() - start,  # this process only
                # every tuning row's BP epoch, feature pass and sweep, whichever process ran it
                "epochs_seconds": sum(row["seconds"]["total"] for row in tuned.epochs),
            }
            if epochs_before:
                record["continued_after_epochs"] = epochs_before
            heads_by_selection = _heads_by_selection(tuned, len(validation.texts))
            progress.keep({"tuning": {"record": record, "heads_by_selection": heads_by_selection}})
        tuning = progress.parts["tuning"]
        payload["tuning"] = tuning["record"]
        by_selection = tuning["heads_by_selection"]
        best = tuning["record"]["config"]
        k, n_hidden, C = best["bp_epochs"], best["n_hidden"], best["C"]
        # EFT's tuned BP stage runs on the tuner's schedule (linear decay within every
        # epoch); the baseline keeps the standard one (linear decay over the run).
        base["lr_schedule"] = best["lr_schedule"]
    stopping = {"bp_epochs": BASELINE_MAX_EPOCHS, "early_stopping_patience": BASELINE_PATIENCE}
    runs = {
        "bp": EFTConfig(**baseline, method="bp", **stopping),
        "eft": EFTConfig(**base, bp_epochs=k, n_hidden=n_hidden, C=C),
        "eft_fused": EFTConfig(
            **base,
            bp_epochs=k,
            n_hidden=n_hidden,
            C=C,
            elm_from_last_epoch=True,
            fused_fraction=args.fused_fraction,
        ),
        "probe": EFTConfig(**base, bp_epochs=0, n_hidden=n_hidden, C=C),
    }
    for lr in args.extra_baseline_learning_rates:
        runs[f"bp_lr{lr:g}"] = EFTConfig(
            **{**baseline, "learning_rate": lr}, method="bp", **stopping
        )
    for name, config in runs.items():
        if name in progress.parts:
            record = progress.parts[name]
            print(f"[{name}] {metric} {record['test_score']:.2f} (kept from the earlier process)")
            continue
        record, model = _run(
            name, config, train, validation, test, metric, progress.part_folder(name)
        )
        if name == "eft":  # the head comparison needs its encoder: kept with it
            heads = _head_comparison(model, train, test, metric, by_selection)
            progress.keep({name: record, "heads": heads})
        else:
            progress.keep({name: record})
    payload["methods"] = {name: progress.parts[name] for name in runs}
    heads = progress.parts["heads"]
    payload["methods"]["logreg_head"] = {
        "test_score": heads["logreg"]["test_score"],
        "test_accuracy": heads["logreg"]["test_accuracy"],
        "train_seconds": heads["logreg"]["fit_seconds"],
        "ielm_head_seconds": heads["ielm"]["fit_seconds"],
        "ielm_head_test_score": heads["ielm"]["test_score"],
        "speedup_ielm_over_logreg": heads["speedup_ielm_over_logreg"],
        # n_hidden 1000, C 1, when the tuned head differs
        "ielm_default_head": heads.get("ielm_default", {}),
        "ielm_heads_by_selection": {  # the head every tuning rule picks at EFT's k
            selection: {**params, **heads[f"selection:{selection}"]}
            for selection, params in by_selection.items()
        },
        "predictions": heads["predictions"]["logreg"],
        "hyper_parameters": {"features": f"EFT encoder (k={k})", "max_iter": 1000},
    }
    return payload


def main(argv: Sequence[str] | None = None, output_dir: str | Path | None = None) -> int:
    """``python benchmarks/bench_eft.py``: the same as ``eft bench`` with another default
    output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.output_dir is None and output_dir is not None:
        args.output_dir = str(output_dir)
    try:
        run_benchmark(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2  # as `eft`'s input errors
    except KeyboardInterrupt:  # run_benchmark said what is kept
        return 130
    return 0
