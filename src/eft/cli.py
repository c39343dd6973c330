"""The ``eft`` command line: train, evaluate, predict, tune, data, compare, experiment, bench.

Every user-input problem prints one line ``eft: error: ...`` on stderr and exits with code 2;
nothing is left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shlex
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from eft.atomic import write_text
from eft.errors import InputError

EXIT_INPUT_ERROR = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default; options that default to the EFTConfig value (None here)
    name that value in their own help text instead."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:  # 0 is a default to show
            return action.help
        return super()._get_help_string(action)


#: ``eft train`` options that ``eft tune`` refuses (it chooses them, or they are not EFT's)
TUNE_REFUSES = (
    "method",
    "bp_epochs",
    "n_hidden",
    "C",
    "fused",
    "fused_fraction",
    "early_stopping_patience",
)


def _add_saved_inference_precision(parser: argparse.ArgumentParser) -> None:
    """``--inference-precision`` of the commands that load a saved model."""
    from eft.config import MIXED_PRECISION

    parser.add_argument(
        "--inference-precision",
        choices=("same", *MIXED_PRECISION),
        help="autocast of the predictions instead of the saved model's (bf16: a GPU, or a CPU "
        "with native bf16; benchmarks/bf16_pass.py measures it)",
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    from eft.benchmark import add_bad_rows, add_text_pair_column

    parser.add_argument("--text-column", default="text", help="column (or JSON key) of the text")
    add_text_pair_column(parser)
    parser.add_argument("--label-column", default="label", help="column (or JSON key) of the label")
    add_bad_rows(parser, "rows with empty text or a missing label")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="root of the datasets for --dataset (default: $EFT_DATA_DIR, else ~/.cache/eft/data)",
    )


def _add_validation_fraction(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--validation-fraction",
        type=float,
        help="hold out this fraction of the training rows (random, --seed) as validation data, "
        "for data without a validation file or split, e.g. 0.1 as the paper (4.1)",
    )


def _add_method_options(parser: argparse.ArgumentParser, defaults) -> None:
    """EFTConfig options shared by `eft train` and `eft tune`."""
    from eft.config import METHODS, MIXED_PRECISION, POOLINGS

    method = parser.add_argument_group("method")
    method.add_argument("--config", help="JSON file of EFTConfig fields (flags override it)")
    method.add_argument(
        "--model", help="local folder or hub id (default: embedded all-MiniLM-L6-v2)"
    )
    method.add_argument("--method", choices=METHODS, help=f"default {defaults.method}")
    method.add_argument(
        "--bp-epochs",
        type=int,
        help=f"k backprop epochs (default {defaults.bp_epochs}; for --method bp the maximum)",
    )
    method.add_argument(
        "--learning-rate",
        type=float,
        help="peak rate of the BP stage (default 2e-4 for --method eft, 5e-5 for --method bp; "
        "lower it for base/large encoders)",
    )
    method.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    method.add_argument("--eval-batch-size", type=int, help=f"default {defaults.eval_batch_size}")
    method.add_argument(
        "--max-length", type=int, help=f"tokens per text (default {defaults.max_length})"
    )
    method.add_argument(
        "--warmup-ratio",
        type=float,
        help="share of the BP steps with a linearly rising rate; in eft tune (and with "
        f"lr_schedule linear_per_epoch) of every epoch (default {defaults.warmup_ratio})",
    )
    method.add_argument(
        "--layer-lr-decay",
        type=float,
        help="layer-wise rate decay in (0, 1]: each encoder block below the top trains at this "
        f"times the rate of the block above (default {defaults.layer_lr_decay:g}: off)",
    )
    method.add_argument(
        "--label-smoothing",
        type=float,
        help=f"label smoothing of the BP stage's loss (default {defaults.label_smoothing:g})",
    )
    method.add_argument(
        "--contrastive-weight",
        type=float,
        help="weight w in [0, 1) of a supervised contrastive loss on the pooled features in "
        f"the BP stage: (1 - w) CE + w SCL (default {defaults.contrastive_weight:g}: off)",
    )
    method.add_argument("--pooling", choices=POOLINGS, help=f"default {defaults.pooling}")
    method.add_argument(
        "--n-hidden", type=int, help=f"I-ELM hidden nodes (default {defaults.n_hidden})"
    )
    method.add_argument(
        "--C", type=float, dest="C", help=f"I-ELM inverse ridge strength (default {defaults.C})"
    )
    method.add_argument("--activation", help=f"I-ELM activation (default {defaults.activation})")
    method.add_argument(
        "--n-iter",
        type=int,
        help=f"I-ELM solves, >1 adds misclassified samples (default {defaults.n_iter})",
    )
    method.add_argument(
        "--class-weight", choices=("balanced",), help="weight classes by inverse frequency"
    )
    method.add_argument(
        "--standardize",
        action="store_true",
        default=None,
        help="standardise features before the I-ELM",
    )
    method.add_argument(
        "--fused",
        action="store_true",
        default=None,
        help="fused mode: I-ELM statistics from the last BP epoch, no feature pass",
    )
    method.add_argument(
        "--fused-fraction",
        type=float,
        help="with --fused: the share of the last epoch (its final steps) that feeds the "
        "I-ELM; the earlier steps' texts get a feature pass (default "
        f"{defaults.fused_fraction:g}: no pass; 0.5: half a pass, near the non-fused score "
        "at k = 1)",
    )
    method.add_argument(
        "--early-stopping-patience",
        type=int,
        help="--method bp: epochs without improvement before stopping",
    )
    method.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    method.add_argument("--device", help=f"cpu, cuda, cuda:N or auto (default {defaults.device})")
    method.add_argument(
        "--mixed-precision",
        choices=MIXED_PRECISION,
        help=f"default {defaults.mixed_precision}: bf16 on a GPU that supports it; bf16 on a "
        "CPU with AVX512-BF16/AMX roughly halves the feature pass",
    )
    method.add_argument(
        "--inference-precision",
        choices=("same", *MIXED_PRECISION),
        help="autocast of the feature pass and predictions only (default same: as "
        "--mixed-precision); bf16 with --mixed-precision no keeps training in float32",
    )
    method.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="allow a model's custom code to run (off by default; a --config file, saved "
        "model or checkpoint cannot turn it on)",
    )
    method.add_argument(
        "--flops", action="store_true", default=None, help="count FLOPs per phase (slower)"
    )


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from eft import __version__
    from eft.benchmark import (
        add_bad_rows,
        add_label_separator,
        add_multi_label,
        add_text_pair_column,
    )
    from eft.config import EFTConfig
    from eft.metrics import METRICS
    from eft.tuning import SELECTIONS

    defaults = EFTConfig()
    parser = argparse.ArgumentParser(
        prog="eft",
        description="Extreme Fine-Tuning: a few backprop epochs, then a closed-form I-ELM head.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"eft {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="fine-tune a text classifier with EFT (or the standard baseline)",
        formatter_class=_Formatter,
        description="Train on a CSV/TSV/JSONL file (optionally .gz) or a named dataset, save "
        "the model to --output and print the per-phase timing table.",
    )
    source = train.add_argument_group("data")
    source.add_argument("--train", help="training file (.csv, .tsv, .jsonl, optionally .gz)")
    source.add_argument(
        "--validation",
        help="validation file (the model's validation score and the calibration of its scores; "
        "early stopping for --method bp)",
    )
    source.add_argument(
        "--dataset",
        help="a named dataset instead of --train: meld, iemocap, imdb, ag_news, trec, "
        "sst2 (see `eft data`)",
    )
    source.add_argument("--max-train", type=int, help="use a random subset of N training rows")
    _add_validation_fraction(source)
    source.add_argument(
        "--stream",
        action="store_true",
        help="read --train as a stream, --chunk-rows at a time, for files larger than memory "
        "(the BP stage shuffles within chunks; shuffle a file sorted by label first)",
    )
    source.add_argument(
        "--chunk-rows",
        type=int,
        default=50_000,
        help="--stream: rows held in memory at a time",
    )
    source.add_argument(
        "--context-past",
        type=int,
        default=0,
        help="EFT*: tokens of past utterances of the same dialogue (MELD, IEMOCAP; paper 4.3)",
    )
    source.add_argument(
        "--context-future",
        type=int,
        default=0,
        help="EFT*: tokens of future utterances of the same dialogue (MELD; paper 4.3)",
    )
    _add_data_options(source)
    add_multi_label(source)
    source.add_argument(
        "--tune-thresholds",
        action="store_const",
        const=True,
        help="multi-label: choose each label's threshold on the validation data, the one that "
        "maximises the label's F1 there, instead of the fixed one (0.5 on the I-ELM's outputs); "
        "for per-label F1, not subset accuracy; needs --validation or --validation-fraction",
    )
    _add_method_options(train, defaults)
    train.add_argument("--output", help="folder to write the model to (required)")
    train.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue an interrupted run from its '<output>.checkpoint' folder (data, options "
        "and output are taken from the checkpoint)",
    )
    train.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="do not save '<output>.checkpoint' after each BP epoch",
    )
    train.add_argument(
        "--quiet", action="store_true", help="no progress bars and no per-epoch loss lines"
    )

    evaluate = commands.add_parser(
        "evaluate", help="score a saved model on a labelled file", formatter_class=_Formatter
    )
    evaluate.add_argument("model_dir", nargs="?", help="folder written by `eft train`")
    evaluate.add_argument("--model", help="the same folder, as an option instead")
    evaluate.add_argument("--data", help="labelled file (.csv, .tsv, .jsonl, optionally .gz)")
    evaluate.add_argument("--dataset", help="a named dataset instead of --data")
    evaluate.add_argument("--split", default="test", help="split of --dataset")
    _add_data_options(evaluate)
    add_label_separator(evaluate, saved=True)
    evaluate.add_argument("--predictions", help="write per-example predictions (JSONL) here")
    evaluate.add_argument(
        "--metrics", help="write the metrics (JSON, with per-class precision/recall/F1) here"
    )
    evaluate.add_argument(
        "--per-class", action="store_true", help="also print precision, recall, F1 per label"
    )
    evaluate.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    _add_saved_inference_precision(evaluate)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")

    predict = commands.add_parser(
        "predict", help="label texts with a saved model", formatter_class=_Formatter
    )
    predict.add_argument("model_dir", nargs="?", help="folder written by `eft train`")
    predict.add_argument("--model", help="the same folder, as an option instead")
    predict.add_argument("texts", nargs="*", help="texts to label (or use --input)")
    predict.add_argument(
        "--input",
        help="file of texts: .txt (one per line), .csv, .tsv, .jsonl; - reads one text per line "
        "from stdin (a text-pair model: text<TAB>text_pair per line)",
    )
    predict.add_argument("--text-column", default="text", help="text column of --input")
    add_text_pair_column(predict)
    add_bad_rows(predict, "rows of --input FILE with an empty or missing text")
    predict.add_argument("--output", help="write JSONL predictions here (default: stdout)")
    predict.add_argument(
        "--all-scores",
        action="store_true",
        help='add every label\'s score to each line ("scores": [{"label", "score"}, ...], '
        "highest first, as a transformers pipeline with top_k=None): the softmax of the "
        "head's outputs (temperature-scaled if the model was trained with validation data), "
        'whose first is "score"; multi-label models: each label\'s sigmoid, and "prediction" '
        'and "score" list the labels above 0.5',
    )
    predict.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    _add_saved_inference_precision(predict)
    predict.add_argument("--quiet", action="store_true", help="no progress bar")

    export = commands.add_parser(
        "export",
        help="write a saved model as one ONNX graph (encoder, head, calibrated probabilities)",
        formatter_class=_Formatter,
        description="Inputs input_ids and attention_mask (the saved tokenizer's, padded); "
        "outputs scores and probabilities (as eft predict's); labels in the file's metadata. "
        "Checked with onnxruntime against the PyTorch model when onnxruntime is installed.",
    )
    export.add_argument("model_dir", nargs="?", help="folder written by `eft train`")
    export.add_argument("--model", help="the same folder, as an option instead")
    export.add_argument("--output", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    export.add_argument("--device", default="cpu", help="device to trace on")
    export.add_argument(
        "--quantize",
        choices=["int8"],
        help="store the weights of the matrix products as 8-bit integers (dynamic "
        "quantization, a scale per channel): about a quarter of the file and faster on CPUs, "
        "at some changed predictions; see how many with --check-input",
    )
    export.add_argument(
        "--check-input",
        help="texts to check the file on against the model (.csv, .tsv, .jsonl; default: four "
        "built-in examples)",
    )
    export.add_argument("--text-column", default="text", help="text column of --check-input")
    export.add_argument(
        "--text-pair-column", help="second text of each pair in --check-input (pair models)"
    )
    add_bad_rows(export, "rows of --check-input FILE with an empty or missing text")

    data = commands.add_parser(
        "data", help="show a named dataset's splits and label counts", formatter_class=_Formatter
    )
    data.add_argument("name", help="meld, iemocap, imdb, ag_news, trec, sst2")
    data.add_argument(
        "--data-dir", help="root of the datasets (default: $EFT_DATA_DIR, else ~/.cache/eft/data)"
    )
    data.add_argument("--json", action="store_true", help="print JSON")

    compare = commands.add_parser(
        "compare",
        help="paired bootstrap test between two prediction files (Koehn 2004)",
        formatter_class=_Formatter,
    )
    compare.add_argument(
        "a", help="predictions of system A (JSONL from `eft evaluate` or `eft bench`)"
    )
    compare.add_argument("b", help="predictions of system B")
    compare.add_argument(
        "--method-a", help="A is an `eft bench` predictions file: its method (bp, eft, ...)"
    )
    compare.add_argument("--method-b", help="the same for B")
    compare.add_argument("--metric", default="weighted_f1", choices=METRICS)
    compare.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0, help="resampling seed")
    compare.add_argument("--json", action="store_true", help="print JSON")
    tune = commands.add_parser(
        "tune",
        help="choose bp_epochs, n_hidden, C (optionally the learning rate, pooling, head) on "
        "validation data (paper 4.2)",
        formatter_class=_Formatter,
        description="Fine-tune once (once per --grid-learning-rate x --grid-pooling value); "
        "after every BP epoch score the whole n_hidden x C grid of I-ELM heads (per "
        "--grid-activation x --grid-standardize value) on validation data from one feature "
        "pass; stop at the first drop. "
        "Writes tuned_config.json (for `eft train --config`), tuning.json and tuning.png.",
    )
    tune_data = tune.add_argument_group("data")
    tune_data.add_argument("--train", help="training file")
    tune_data.add_argument("--validation", help="validation file (required with --train)")
    tune_data.add_argument("--dataset", help="a named dataset with a validation split")
    tune_data.add_argument("--max-train", type=int, help="use a random subset of N training rows")
    _add_validation_fraction(tune_data)
    tune_data.set_defaults(context_past=0, context_future=0, tune_thresholds=None)
    _add_data_options(tune_data)
    add_multi_label(tune_data)
    _add_method_options(tune, defaults)
    for action in tune._actions:  # parsed, so that they are refused by name, but not listed
        if action.dest in TUNE_REFUSES:
            action.help = argparse.SUPPRESS
    tune.add_argument("--max-epochs", type=int, default=6, help="largest k tried")
    tune.add_argument(
        "--grid-n-hidden", default="250,500,1000,2000,4000", help="n_hidden values (comma list)"
    )
    tune.add_argument("--grid-C", default="0.001,0.01,0.1,1,10,100,1000", help="C values")
    tune.add_argument(
        "--grid-learning-rate",
        help="learning rates of the BP stage to try, e.g. 5e-5,2e-4 (one fine-tuning run each; "
        "default: --learning-rate only)",
    )
    tune.add_argument(
        "--grid-pooling",
        help="poolings to try, e.g. cls,mean (one fine-tuning run each; default: --pooling)",
    )
    tune.add_argument(
        "--grid-activation",
        help="I-ELM activations to try, e.g. leaky_relu,tanh (cheap; default: --activation)",
    )
    tune.add_argument(
        "--grid-standardize",
        help="feature standardisation to try: no,yes (cheap; default: --standardize)",
    )
    tune.add_argument(
        "--scoring",
        choices=("accuracy", "weighted_f1"),
        default="accuracy",
        help="the validation score the grid is chosen by",
    )
    tune.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="best",
        help="best: k and head with the best validation score (the paper); one_se: the "
        "fewest BP epochs and then the smallest n_hidden within one standard error of the "
        "best (faster training, the same score within noise); one_se_head: the paper's k, "
        "then the smallest n_hidden within one standard error (a faster head only); "
        "one_se_epoch: one_se's k, then the best head at that k (fewer epochs only)",
    )
    tune.add_argument("--output", required=True, help="folder for the tuning results")
    tune.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="do not keep finished epochs and the encoder in '<output>.checkpoint' (kept by "
        "default: an interrupted run continues when the same command runs again)",
    )
    tune.add_argument("--quiet", action="store_true", help="no progress bars")

    experiment = commands.add_parser(
        "experiment",
        help="run a paper table from an experiments/*.toml config",
        formatter_class=_Formatter,
    )
    experiment.add_argument("config", help="experiment TOML (see experiments/)")
    experiment.add_argument(
        "--seeds", type=_positive_int, default=3, help="runs per row (paper: 3)"
    )
    experiment.add_argument("--data-dir", help="root of the datasets (default: $EFT_DATA_DIR)")
    experiment.add_argument("--model", help="override every row's model")
    experiment.add_argument("--max-train", type=int, help="subsample the training split")
    experiment.add_argument("--flops", action="store_true", help="count FLOPs (Table 7; slower)")
    experiment.add_argument(
        "--output", help="results folder (default: benchmarks/results/experiment_<name>)"
    )
    experiment.add_argument("--quiet", action="store_true", help="no progress output")
    experiment.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the models' custom code to run (off by default; the experiment file "
        "cannot turn it on)",
    )
    experiment.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="keep no '<output>.checkpoint' folder (by default an interrupted experiment "
        "continues when the same command is run again)",
    )

    bench = commands.add_parser(
        "bench",
        help="standard fine-tuning against EFT (and fused, probe, LogReg head) side by side",
        description="Standard fine-tuning (up to 10 epochs, early stopping) against EFT, EFT "
        "in fused mode, the k = 0 probe and a LogisticRegression head on EFT's features, in "
        "one run on this machine: test scores, training time per phase, time ratios and "
        "paired-bootstrap p-values, written as JSON, Markdown and PNG plots.",
        formatter_class=_Formatter,
    )
    from eft.benchmark import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    return parser


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def _config_from_args(args: argparse.Namespace):
    from eft.config import EFTConfig

    base = EFTConfig.from_json(args.config) if args.config else EFTConfig()
    # where checkpoints go is each command's business (eft train: <output>.checkpoint); a saved
    # model's eft_config.json names its own run's, which eft train deletes when done
    values: dict[str, Any] = {"checkpoint_dir": None}
    mapping = {
        "model": "model",
        "method": "method",
        "bp_epochs": "bp_epochs",
        "learning_rate": "learning_rate",
        "batch_size": "batch_size",
        "eval_batch_size": "eval_batch_size",
        "max_length": "max_length",
        "warmup_ratio": "warmup_ratio",
        "layer_lr_decay": "layer_lr_decay",
        "label_smoothing": "label_smoothing",
        "contrastive_weight": "contrastive_weight",
        "pooling": "pooling",
        "n_hidden": "n_hidden",
        "C": "C",
        "activation": "activation",
        "n_iter": "n_iter",
        "class_weight": "class_weight",
        "tune_thresholds": "tune_thresholds",
        "standardize": "standardize",
        "fused": "elm_from_last_epoch",
        "fused_fraction": "fused_fraction",
        "early_stopping_patience": "early_stopping_patience",
        "seed": "seed",
        "device": "device",
        "mixed_precision": "mixed_precision",
        "inference_precision": "inference_precision",
        "trust_remote_code": "trust_remote_code",
        "flops": "flops",
    }
    for arg, field in mapping.items():
        value = getattr(args, arg)
        if value is not None:
            values[field] = value
    values["progress"] = not args.quiet
    # remote code runs if the command line says so (--trust-remote-code), not a --config file
    values["trust_remote_code"] = bool(getattr(args, "trust_remote_code", None))
    return base.replace(**values)  # a default learning rate follows --method


def _load_training_data(args: argparse.Namespace, config: Any):
    """Training texts and labels, and the validation ones (or None); ``config.seed`` draws
    the rows that ``--validation-fraction`` holds out, ``config.model`` counts the tokens of
    EFT* context."""
    from eft import datasets
    from eft.benchmark import refuse_text_pairs_of_dataset

    if bool(args.train) == bool(args.dataset):
        raise InputError("Give exactly one of --train FILE or --dataset NAME.")
    if args.context_past or args.context_future:
        if not args.dataset:
            raise InputError("--context-past/--context-future need --dataset (dialogue data).")
    pair_column = _text_pair_column(args)
    refuse_text_pairs_of_dataset(args.dataset, pair_column, "--train/--validation files")
    separator = _label_separator(args)
    if separator is not None and args.dataset:
        raise InputError(
            f"--multi-label reads label sets from --train/--validation files; the dataset "
            f"{args.dataset} has one label per text."
        )
    if args.dataset and args.validation:
        raise InputError(
            f"--validation FILE goes with --train FILE; --dataset {args.dataset} brings its own "
            f"splits (hold out training rows with --validation-fraction instead)."
        )
    if args.dataset:
        dataset = datasets.load(args.dataset, data_dir=args.data_dir)
        train = dataset["train"]  # a named error where the data has none (AG News here)
        validation = dataset.splits.get("validation")
        if args.context_past or args.context_future:
            from eft.context import build_context_inputs
            from eft.encoder import load_tokenizer

            tokenizer = load_tokenizer(config.model, config.trust_remote_code)
            texts = build_context_inputs(train, tokenizer, args.context_past, args.context_future)
            eval_texts = None
            if validation:
                eval_texts = build_context_inputs(
                    validation, tokenizer, args.context_past, args.context_future
                )
        else:
            texts = list(train.texts)
            eval_texts = list(validation.texts) if validation else None
        labels = list(train.labels)
        eval_labels = list(validation.labels) if validation else None
    else:
        texts, labels = _read_labeled(args, args.train, separator)
        eval_texts = eval_labels = None
        if args.validation:
            eval_texts, eval_labels = _read_labeled(args, args.validation, separator)
    if args.max_train is not None:  # the rows eft bench and eft experiment keep
        kept = datasets.subsample(datasets.Split(texts, labels), args.max_train, seed=0)
        texts, labels = list(kept.texts), list(kept.labels)
    fraction = getattr(args, "validation_fraction", None)  # checkpoints of older runs lack it
    if fraction is not None:
        if eval_texts is not None:
            where = "--validation FILE" if args.train else f"the {args.dataset} validation split"
            raise InputError(
                f"--validation-fraction holds out training rows for validation, but there is "
                f"validation data already ({where}); drop one of the two."
            )
        kept, held = datasets.hold_out(datasets.Split(texts, labels), fraction, config.seed)
        if held is None:
            raise InputError(
                f"--validation-fraction {fraction} of {len(texts)} rows holds out no row; "
                f"use a larger fraction."
            )

        def seen(rows: list[Any]) -> set[Any]:  # labels, or the labels of label sets
            return {v for y in rows for v in (y if isinstance(y, tuple) else (y,))}

        lost = sorted(seen(held.labels) - seen(kept.labels), key=str)
        if lost:  # the hold-out is random, not stratified: a rare label may go whole
            raise InputError(
                f"--validation-fraction {fraction} (seed {config.seed}) held out every "
                f"training row of the label(s) {lost[:10]}, so the model could not learn them; "
                "use a smaller fraction, another --seed, or give --validation FILE."
            )
        texts, labels, eval_texts, eval_labels = kept.texts, kept.labels, held.texts, held.labels
    return texts, labels, eval_texts, eval_labels


def _read_labeled(
    args: argparse.Namespace, path: str, label_separator: str | None = None
) -> tuple[list[Any], list[Any]]:
    """A labelled file read with the command's column, bad-row and text-pair options (and, for
    multi-label data, ``label_separator``)."""
    from eft import datasets

    return datasets.read_labeled_file(
        path,
        args.text_column,
        args.label_column,
        bad_rows=args.bad_rows,
        text_pair_column=_text_pair_column(args),
        label_separator=label_separator,
    )


def _read_texts(args: argparse.Namespace, path: str) -> list[Any]:
    """An unlabelled file of texts read with the command's column and bad-row options."""
    from eft import datasets

    return datasets.read_text_file(
        path, args.text_column, bad_rows=args.bad_rows, text_pair_column=args.text_pair_column
    )


def _label_separator(args: argparse.Namespace) -> str | None:
    """The separator of multi-label cells with ``--multi-label`` (``eft train``), else None."""
    if not getattr(args, "multi_label", False):  # checkpoints of older runs lack it
        return None
    return args.label_separator


def _text_pair_column(args: argparse.Namespace) -> str | None:
    return getattr(args, "text_pair_column", None)  # checkpoints of older runs lack it


def _text_fields(text: str | tuple[str, str]) -> dict[str, str]:
    """A JSONL line's text fields: ``text``, and ``text_pair`` for a pair."""
    if isinstance(text, tuple):
        return {"text": text[0], "text_pair": text[1]}
    return {"text": text}


def format_timings(timings: dict[str, float]) -> str:
    """The per-phase timing table (paper Appendix F / Table 6)."""
    rows = [
        ("BP (steps 4-5)", "bp"),
        ("feedforward (steps 6-7)", "feedforward"),
        ("I-ELM (steps 8-9)", "elm"),
        ("training time (TTM)", "train"),
        ("tokenise", "tokenize"),
        ("validation", "evaluation"),
        ("total", "total"),
    ]
    lines = [f"{'phase':<26}{'seconds':>10}"]
    lines += [f"{label:<26}{timings[key]:>10.2f}" for label, key in rows if key in timings]
    return "\n".join(lines)


def command_train(args: argparse.Namespace) -> int:
    from eft.checkpoint import read_checkpoint
    from eft.classifier import EFTClassifier, _check_output_dir
    from eft.config import EFTConfig

    resume = args.resume
    if resume:
        state = read_checkpoint(resume)
        if "cli_args" not in state:
            raise InputError(
                f"{resume} was not written by `eft train`; resume it from Python with "
                f"EFTClassifier(config).fit(..., resume_from={resume!r})."
            )
        quiet, trust = args.quiet, bool(args.trust_remote_code)
        args = argparse.Namespace(**state["cli_args"])
        args.quiet, args.trust_remote_code = quiet, trust
        # remote code runs if this command line says so, not because the checkpoint says so
        config = EFTConfig.from_dict(
            {**state["config"], "progress": not quiet, "trust_remote_code": trust}
        )
    else:
        if not args.output:
            raise InputError("--output DIR is required (the folder to write the model to).")
        config = _config_from_args(args)  # a --config file's checkpoint_dir is dropped
        if not args.no_checkpoint:
            config.checkpoint_dir = f"{Path(args.output)}.checkpoint"
    output = Path(args.output)
    _check_output_dir(output)  # fail before hours of training, not after
    stream = getattr(args, "stream", False)  # checkpoints of older runs lack it
    if stream:
        held_out = getattr(args, "validation_fraction", None)  # and this
        if not args.train or args.dataset or args.max_train is not None or held_out is not None:
            raise InputError(
                "--stream reads a --train FILE (no --dataset, --max-train or "
                "--validation-fraction; give --validation FILE)."
            )
        eval_texts = eval_labels = None
        if args.validation:
            eval_texts, eval_labels = _read_labeled(
                args, args.validation, label_separator=_label_separator(args)
            )
    else:
        texts, labels, eval_texts, eval_labels = _load_training_data(args, config)
    cli_args = {k: v for k, v in vars(args).items() if k not in ("resume", "command")}
    printer = _EpochPrinter(config.method == "eft", multi_label=_label_separator(args) is not None)
    callbacks = [] if args.quiet else [printer]
    try:
        classifier = EFTClassifier(config)
        if stream:
            classifier.fit_stream(
                args.train,
                eval_texts,
                eval_labels,
                text_column=args.text_column,
                label_column=args.label_column,
                bad_rows=args.bad_rows,
                chunk_rows=args.chunk_rows,
                resume_from=resume,
                checkpoint_metadata={"cli_args": cli_args},
                text_pair_column=_text_pair_column(args),
                callbacks=callbacks,
                label_separator=_label_separator(args),
            )
        else:
            classifier.fit(
                texts,
                labels,
                eval_texts,
                eval_labels,
                resume_from=resume,
                checkpoint_metadata={"cli_args": cli_args},
                callbacks=callbacks,
            )
    except KeyboardInterrupt:
        checkpoint = config.checkpoint_dir
        hint = ""
        if checkpoint and Path(checkpoint, "checkpoint.json").is_file():
            hint = f" Resume with: eft train --resume {checkpoint}"
        print(f"eft: interrupted; no model was written.{hint}", file=sys.stderr)
        return 130
    if not stream:  # fit_stream keeps the separator it read the file with; fit saw label sets
        classifier.label_separator_ = _label_separator(args) if classifier.multi_label_ else None
    if classifier.is_main_process_:
        classifier.save_pretrained(output)
        if config.checkpoint_dir:
            shutil.rmtree(config.checkpoint_dir, ignore_errors=True)
        multi_label = classifier.multi_label_
        kind = "labels (multi-label)" if multi_label else "classes"
        print(
            f"Trained {config.method.upper()} on {classifier.n_train_:,} texts, "
            f"{len(classifier.classes_)} {kind}; model saved to {output}"
        )
        history = classifier.history_
        accuracy = "subset accuracy (every label right)" if multi_label else "accuracy"
        if history.get("bp_validation_accuracy"):
            scores = ", ".join(f"{100 * s:.2f}" for s in history["bp_validation_accuracy"])
            head = " (linear head)" if config.method == "eft" else ""
            print(f"validation {accuracy} after each BP epoch{head}: {scores}")
        if "validation_accuracy" in history:
            kept = "I-ELM head" if config.method == "eft" else "the kept epoch"
            score = 100 * history["validation_accuracy"]
            print(f"validation {accuracy} of the model ({kept}): {score:.2f}")
        if "thresholds" in history:
            fixed = 100 * history["thresholds"]["validation_accuracy_fixed"]
            print(
                f"label thresholds tuned on the validation data (its {accuracy} at the fixed "
                f"threshold: {fixed:.2f}; the tuned thresholds are fitted to it)"
            )
        if "calibration" in history:
            calibration = history["calibration"]
            function = "sigmoid" if multi_label else "softmax"
            print(
                f"{function} temperature {calibration['temperature']:.4g}, fitted on the "
                f"validation data (log-loss {calibration['validation_nll_uncalibrated']:.4f} -> "
                f"{calibration['validation_nll']:.4f})"
            )
        elif config.method == "eft":
            print(
                "predicted scores are not calibrated: train with validation data "
                "(--validation FILE or --validation-fraction 0.1) to calibrate them"
            )
        print(format_timings(classifier.timings_))
        if classifier.flops_:
            for name, value in classifier.flops_.items():
                print(f"FLOPs {name:<22}{value:>14.3e}")
    return 0


def _load_evaluation_data(args: argparse.Namespace, multi_label: bool = False):
    from eft import datasets
    from eft.benchmark import refuse_text_pairs_of_dataset

    if bool(args.data) == bool(args.dataset):
        raise InputError("Give exactly one of --data FILE or --dataset NAME.")
    refuse_text_pairs_of_dataset(args.dataset, args.text_pair_column, "--data FILE")
    if multi_label and args.dataset:
        raise InputError(
            f"The model is multi-label; the dataset {args.dataset} has one label per text. "
            "Give its label sets in --data FILE."
        )
    if args.dataset:
        dataset = datasets.load(args.dataset, data_dir=args.data_dir)
        if args.split not in dataset.splits:
            raise InputError(
                f"Dataset {args.dataset} has no split {args.split!r}; it has "
                f"{', '.join(dataset.splits)}."
            )
        split = dataset.splits[args.split]
        return list(split.texts), list(split.labels)
    return _read_labeled(args, args.data, args.label_separator if multi_label else None)


def _evaluation_separator(args: argparse.Namespace, model: Any) -> None:
    """``--label-separator`` of ``eft evaluate``: as given, else the separator the model's
    training file was read with (older saves and models fitted from label sets: ',')."""
    if args.label_separator is None:
        args.label_separator = getattr(model, "label_separator_", None) or ","


def _saved_model_dir(args: argparse.Namespace, command: str) -> tuple[str, list[str]]:
    """The saved model of ``eft evaluate`` / ``eft predict`` (the first argument or
    ``--model``, as in ``eft train``) and ``predict``'s texts: with ``--model``, the first
    argument is a text."""
    texts = list(getattr(args, "texts", []))
    if args.model is None:
        if args.model_dir is None:
            raise InputError(
                f"Name the saved model: eft {command} MODEL_DIR ... (or --model MODEL_DIR)."
            )
        return args.model_dir, texts
    if args.model_dir is not None:
        if command != "predict":
            raise InputError(
                f"Two models given ({args.model_dir!r} and --model {args.model!r}): give one."
            )
        texts.insert(0, args.model_dir)
    return args.model, texts


def command_evaluate(args: argparse.Namespace) -> int:
    from eft.classifier import EFTClassifier

    model_dir, _ = _saved_model_dir(args, "evaluate")
    _refuse_folder(args.predictions, "--predictions")
    _refuse_folder(args.metrics, "--metrics")
    model = EFTClassifier.from_pretrained(
        model_dir, device=args.device, inference_precision=args.inference_precision
    )
    _check_input_kind(model, model_dir, args, "--data FILE")
    model.set_params(progress=not args.quiet)  # a bar for a pass over 2 s, on stderr
    _evaluation_separator(args, model)
    texts, labels = _load_evaluation_data(args, model.multi_label_)
    if model.multi_label_:
        scores, printed, per_class, rows = _multi_label_evaluation(
            model, labels, texts, args.label_separator
        )
    else:
        scores, printed, per_class, rows = _single_label_evaluation(model, labels, texts)
    width = 16 if model.multi_label_ else 12  # the longest name, subset_accuracy, and 1
    for name in printed:
        print(f"{name:<{width}}{scores[name]:>8.2f}")
    over_labels = "  (binary, mean over labels)" if model.multi_label_ else ""
    print(f"{'log_loss':<{width}}{scores['log_loss']:>8.4f}{over_labels}")
    print(f"{'examples':<{width}}{len(texts):>8d}")
    if model.temperature_ == 1.0 and model.head_ is not None:
        print("(scores not calibrated: the model was trained without validation data)")
    if args.per_class:
        _print_per_class(per_class)
    if args.predictions:
        lines = (
            json.dumps({"id": i, **_text_fields(t), **row}, ensure_ascii=False)
            for i, (t, row) in enumerate(zip(texts, rows, strict=True))
        )
        write_text(args.predictions, "\n".join(lines) + "\n")
    if args.metrics:
        payload = {
            **scores,
            "examples": len(texts),
            "model": str(model_dir),
            "per_class": per_class,
        }
        write_text(args.metrics, json.dumps(payload, indent=2) + "\n")
    return 0


def _single_label_evaluation(model: Any, labels: list[Any], texts: list[Any]):
    """Scores, the names to print, per-class scores and each text's fields of the predictions
    file (``label``, ``prediction``, ``score``) of a single-label model; labels as strings."""
    import numpy as np

    from eft.calibration import expected_calibration_error
    from eft.metrics import classification_scores, per_class_scores

    known = {str(c) for c in model.classes_}
    unknown = sorted({str(label) for label in labels} - known)
    if unknown:
        raise InputError(
            f"The evaluation data has labels the model does not know: {unknown[:10]}; the model "
            f"was trained on {sorted(known)[:20]}."
        )
    proba = model.predict_proba(texts)  # its argmax is predict's
    truth = np.asarray([str(label) for label in labels])
    predicted = np.asarray([str(c) for c in model.classes_[proba.argmax(1)]])
    scores = classification_scores(truth, predicted)
    column = {str(c): i for i, c in enumerate(model.classes_)}
    truth_proba = proba[np.arange(len(truth)), [column[label] for label in truth]]
    scores["log_loss"] = float(-np.log(np.clip(truth_proba, 1e-15, 1.0)).mean())
    scores["ece"] = 100 * expected_calibration_error(proba, [column[label] for label in truth])
    rows = [
        {"label": y, "prediction": p, "score": round(float(q), 6)}
        for y, p, q in zip(truth.tolist(), predicted.tolist(), proba.max(1), strict=True)
    ]
    printed = ("accuracy", "weighted_f1", "macro_f1", "ece")
    # every label of the model, as a multi-label model lists every label
    per_class = per_class_scores(truth, predicted, labels=list(column))
    return scores, printed, per_class, rows


def _multi_label_evaluation(model: Any, labels: list[Any], texts: list[Any], separator: str = ","):
    """As :func:`_single_label_evaluation`, for a multi-label model and label sets of strings:
    the fields list the true and the predicted labels (in the model's order) and the predicted
    ones' probabilities. An unknown label made of known ones joined by a character is named
    as a cell split at another separator than the file's."""
    import numpy as np

    from eft.classifier import encode_labels
    from eft.metrics import MULTI_LABEL_METRICS, multi_label_scores, per_label_scores

    names = np.asarray([str(c) for c in model.classes_])
    try:
        _, truth = encode_labels(labels, names, "evaluation")
    except InputError as error:
        known, used = set(names.tolist()), set("".join(names))
        for cell in sorted({str(v) for row in labels for v in row} - known):
            for mark in sorted(set(cell) - used):  # cell = known labels joined by mark?
                if set(cell.split(mark)) <= known:
                    raise InputError(
                        f"{error} The cell {cell!r} holds labels joined by {mark!r}: give "
                        f"the file's separator with --label-separator {shlex.quote(mark)} "
                        f"(this file was split at {separator!r})."
                    ) from error
        raise
    proba = model.predict_proba(texts)
    predicted = (proba > 0.5).astype(np.int64)  # as predict decides
    scores = multi_label_scores(truth, predicted)
    clipped = np.clip(proba, 1e-15, 1 - 1e-15)
    scores["log_loss"] = float(
        -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped)).mean()
    )
    rows = [
        {
            "label": names[y == 1].tolist(),
            "prediction": names[q == 1].tolist(),
            "score": [round(float(v), 6) for v in p[q == 1]],
        }
        for y, q, p in zip(truth, predicted, proba, strict=True)
    ]
    return scores, MULTI_LABEL_METRICS, per_label_scores(truth, predicted, names), rows


def _print_per_class(per_class: dict[str, dict[str, float]]) -> None:
    width = max(12, *(len(label) + 2 for label in per_class))
    print(f"\n{'label':<{width}}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}")
    for label, row in per_class.items():
        print(
            f"{label:<{width}}{row['precision']:>10.2f}{row['recall']:>8.2f}"
            f"{row['f1']:>8.2f}{row['support']:>9d}"
        )


class _EpochPrinter:
    """`eft train` without --quiet: one line on stderr as each BP epoch ends (main process)."""

    def __init__(self, linear_head: bool, multi_label: bool) -> None:
        self.head = " (linear head)" if linear_head else ""  # EFT's head comes after
        self.accuracy = "subset accuracy" if multi_label else "accuracy"

    def on_epoch_end(self, log: Any, model: Any) -> None:
        if not log.is_main_process:
            return
        line = f"BP epoch {log.epoch}/{log.epochs}: loss {log.train_loss:.4f}"
        if log.validation_accuracy is not None:
            score = 100 * log.validation_accuracy
            line += f", validation {self.accuracy}{self.head} {score:.2f} %"
        print(f"{line} ({log.seconds:.1f} s)", file=sys.stderr, flush=True)


def command_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from eft.classifier import EFTClassifier

    _refuse_folder(args.output, "--output")
    model_dir, texts = _saved_model_dir(args, "predict")
    if bool(texts) == bool(args.input):
        raise InputError("Give texts as arguments or --input FILE (one of the two).")
    if args.text_pair_column and not args.input:
        raise InputError(
            "--text-pair-column names a column of --input FILE; give the text pairs in a "
            ".csv, .tsv or .jsonl file."
        )
    if args.text_column != "text" and args.input in (None, "-"):
        given = "text arguments" if args.input is None else "--input - (one text per line)"
        raise InputError(
            f"--text-column names a column of a .csv, .tsv or .jsonl --input FILE; {given} "
            "have no columns: drop it."
        )
    if args.input == "-":
        texts = _stdin_lines(args)
    elif args.input:
        texts = _read_texts(args, args.input)
    model = EFTClassifier.from_pretrained(
        model_dir, device=args.device, inference_precision=args.inference_precision
    )
    if args.input == "-" and model.text_pairs_:
        texts = _tab_separated_pairs(texts)
    elif args.input != "-":
        _check_input_kind(model, model_dir, args, "--input FILE")
    model.set_params(progress=not args.quiet)  # a bar for a pass over 2 s, on stderr
    proba = model.predict_proba(texts)
    labels = model.classes_[proba.argmax(1)]
    classes = model.classes_.tolist()  # Python ints and strings, as JSON writes them

    def line(text: str | tuple[str, str], label: Any, p: np.ndarray) -> str:
        row = {**_text_fields(text)}
        if model.multi_label_:  # every label above 0.5 and its probability, in label order
            chosen = np.flatnonzero(p > 0.5)
            row["prediction"] = [classes[i] for i in chosen]
            row["score"] = [round(float(p[i]), 6) for i in chosen]
        else:
            row["prediction"] = label.item() if hasattr(label, "item") else label
            row["score"] = round(float(p.max()), 6)
        if args.all_scores:
            row["scores"] = [
                {"label": classes[i], "score": round(float(p[i]), 6)}
                for i in np.argsort(-p, kind="stable")
            ]
        return json.dumps(row, ensure_ascii=False)

    lines = [line(t, label, p) for t, label, p in zip(texts, labels, proba, strict=True)]
    if args.output:
        write_text(args.output, "\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


def _check_input_kind(model: Any, model_dir: str, args: argparse.Namespace, where: str) -> None:
    """A model trained on text pairs reads two columns; one trained on single texts, one."""
    if model.text_pairs_ and not args.text_pair_column:
        stdin = ""
        if where.startswith("--input"):
            stdin = ", or pipe text<TAB>text_pair lines to --input -"
        raise InputError(
            f"{model_dir} was trained on text pairs: give them in {where} with --text-column "
            f"and --text-pair-column{stdin}."
        )
    if args.text_pair_column and not model.text_pairs_:
        raise InputError(
            f"{model_dir} was trained on single texts: drop --text-pair-column "
            f"{args.text_pair_column}."
        )


def _stdin_lines(args: argparse.Namespace) -> list[str]:
    """``--input -``: one text per line from stdin (blank lines ignored), as a .txt file; a
    pair model's lines are split by :func:`_tab_separated_pairs`."""
    if args.text_pair_column:
        raise InputError(
            "--input - reads one text, or one tab-separated text pair, per line from stdin; "
            "drop --text-pair-column (it names a column of a .csv, .tsv or .jsonl file)."
        )
    lines = [line.rstrip("\r\n") for line in _stdin_text() if line.strip()]
    if lines and lines[0].startswith("\ufeff"):  # a byte-order mark, as a file's is dropped
        lines[0] = lines[0][1:]
        if not lines[0].strip():
            lines.pop(0)
    if not lines:
        raise InputError("--input - read no text from stdin: pipe one text per line.")
    return lines


def _stdin_text() -> Iterator[str]:
    """Stdin's lines decoded as UTF-8 whatever the locale: bytes that are not UTF-8 are named
    by line, as a file's are (a locale's lax decoding passed them on to the tokenizer)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # already text (a StringIO)
        yield from sys.stdin
        return
    for number, line in enumerate(raw, start=1):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(
                f"Line {number} of stdin is not UTF-8 encoded (byte 0x{line[error.start]:02x} "
                f"at byte {error.start} of the line); re-encode it as UTF-8, e.g. "
                "`... | iconv -f latin1 -t utf-8 | eft predict MODEL --input -`"
            ) from None


def _tab_separated_pairs(lines: list[str]) -> list[tuple[str, str]]:
    """A pair model's stdin lines, ``text<TAB>text_pair``: split on the first tab."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        text, tab, pair = line.partition("\t")
        if not tab:
            raise InputError(
                f"Line {number} of stdin has no tab: the model was trained on text pairs, so "
                "--input - reads one pair per line as text<TAB>text_pair "
                "(for example: paste premises.txt hypotheses.txt | eft predict MODEL --input -)."
            )
        pairs.append((text, pair))
    return pairs


def command_export(args: argparse.Namespace) -> int:
    from eft.classifier import EFTClassifier
    from eft.export import check_onnx, example_texts, export_onnx

    model_dir, _ = _saved_model_dir(args, "export")
    model = EFTClassifier.from_pretrained(model_dir, device=args.device)
    texts = None
    if args.text_pair_column and not args.check_input:
        raise InputError("--text-pair-column names a column of --check-input FILE; give one.")
    if args.check_input:
        texts = _read_texts(args, args.check_input)
        _check_input_kind(model, model_dir, args, "--check-input FILE")
    model.set_params(progress=False)
    path = export_onnx(model, args.output, opset_version=args.opset, quantize=args.quantize)
    print(f"ONNX graph of {model_dir} written to {path}" + (" (int8)" if args.quantize else ""))
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: the file was not checked against the model")
        return 0
    check = check_onnx(model, path, texts or example_texts(model))
    print(
        f"checked with onnxruntime on {check['texts']} texts: "
        f"{100 * check['same_predictions']:.1f} % the same predictions, largest difference "
        f"{check['max_abs_probability_difference']:.2g} in a probability and "
        f"{check['max_abs_score_difference']:.2g} in a score"
    )
    if args.quantize:  # int8 weights change some predictions by design: reported, not failed
        return 0
    return 0 if check["same_predictions"] == 1.0 else 1


def command_data(args: argparse.Namespace) -> int:
    from eft import datasets

    summary = datasets.load(args.name, data_dir=args.data_dir).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for split, info in summary.items():
        counts = ", ".join(f"{label} {n}" for label, n in info["labels"].items())
        print(f"{split:<11}{info['size']:>7}  {counts}")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from eft.metrics import compare_prediction_files

    result = compare_prediction_files(
        args.a, args.b, args.metric, args.samples, args.seed, args.method_a, args.method_b
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.metric}: A {result['score_a']:.2f}  B {result['score_b']:.2f}  "
        f"difference {result['difference']:+.2f}"
    )
    print(f"p-value (B better than A): {result['p_value']:.4f}")
    print(
        f"B is comparable to A (not significantly worse: p-value (B worse than A) "
        f"{result['p_value_worse']:.4f} >= 0.05): {'yes' if result['comparable'] else 'no'}"
    )
    return 0


def _comma_list(value: str | None, kind: Callable[[str], Any]) -> list[Any] | None:
    """``"a,b"`` -> ``[kind("a"), kind("b")]``; None (option not given) stays None."""
    if value is None:
        return None
    return [kind(v.strip()) for v in value.split(",") if v.strip()]


def _selection_line(selection: str, standard_error: float) -> str:
    """What the one-standard-error rule ``selection`` of ``eft tune`` chose, for its output."""
    what = {
        "one_se": "the fewest epochs, then the smallest n_hidden",
        "one_se_head": "at the best k, the smallest n_hidden",
        "one_se_epoch": "the fewest epochs, then the best head at that k",
    }[selection]
    return (
        f"one-standard-error rule: {what}, within {100 * standard_error:.2f} points of the best "
        "validation score"
    )


def command_tune(args: argparse.Namespace) -> int:

    from eft.tuning import finished_epochs, tune, write_tuning

    chosen = [
        option
        for option, value in (
            ("--bp-epochs", args.bp_epochs),
            ("--n-hidden", args.n_hidden),
            ("--C", args.C),
        )
        if value is not None
    ]
    if chosen:  # they were ignored
        raise InputError(
            f"eft tune chooses k, n_hidden and C itself: drop {', '.join(chosen)} (their grids "
            "are --max-epochs, --grid-n-hidden and --grid-C)."
        )
    _refuse_file(args.output, "--output")
    config = _config_from_args(args)
    if config.method == "bp":  # --method bp, or a --config file's
        raise InputError(
            "eft tune chooses EFT's k, n_hidden and C; --method bp (standard fine-tuning) has "
            "none of them: drop --method, or compare both with eft bench."
        )
    texts, labels, eval_texts, eval_labels = _load_training_data(args, config)
    if eval_texts is None:
        raise InputError(
            "Tuning needs validation data: --validation FILE, --validation-fraction 0.1 (held "
            "out of the training rows), or a dataset with a validation split."
        )
    try:
        n_hidden = [int(v) for v in args.grid_n_hidden.split(",")]
        strengths = [float(v) for v in args.grid_C.split(",")]
        learning_rates = _comma_list(args.grid_learning_rate, float)
    except ValueError as error:
        raise InputError(
            f"--grid-n-hidden / --grid-C / --grid-learning-rate must be comma-separated numbers: "
            f"{error}"
        ) from error
    standardize = _comma_list(args.grid_standardize, str)
    if standardize is not None:
        flags = {"no": False, "yes": True, "false": False, "true": True}
        unknown = [v for v in standardize if v.lower() not in flags]
        if unknown:
            raise InputError(f"--grid-standardize takes no,yes; got {','.join(unknown)}.")
        standardize = [flags[v.lower()] for v in standardize]
    checkpoint = None if args.no_checkpoint else Path(f"{Path(args.output)}.checkpoint")

    def continuing(done: int) -> None:  # once tune has checked the run's fingerprint
        print(f"continuing the interrupted tuning run in {checkpoint} ({done} epoch(s) done)")

    try:
        with _new_folders_go_on_input_error(checkpoint, finished=finished_epochs):
            result = tune(
                texts,
                labels,
                eval_texts,
                eval_labels,
                config,
                max_epochs=args.max_epochs,
                n_hidden=n_hidden,
                C=strengths,
                scoring=args.scoring,
                learning_rates=learning_rates,
                poolings=_comma_list(args.grid_pooling, str),
                activations=_comma_list(args.grid_activation, str),
                standardize=standardize,
                selection=args.selection,
                checkpoint_dir=checkpoint,
                on_continue=continuing,
            )
    except KeyboardInterrupt:
        done = finished_epochs(checkpoint) if checkpoint is not None else 0
        kept = (
            f" {done} finished epoch(s) are kept in {checkpoint}: run the same command again "
            "to continue."
            if done
            else ""
        )
        print(f"eft: interrupted; no tuning results were written.{kept}", file=sys.stderr)
        return 130
    out = write_tuning(result, args.output)
    if checkpoint is not None:
        shutil.rmtree(checkpoint, ignore_errors=True)
    print(
        f"{'lr':>8} {'pooling':>9} {'k':>3} {'best ' + args.scoring:>18} {'head':>16} "
        f"{'n_hidden':>9} {'C':>8} {'linear head':>12} {'BP epoch s':>10}"
    )
    for epoch in result.epochs:
        params = epoch["best_params"]
        head = ("std " if params["standardize"] else "") + params["activation"]
        print(
            f"{epoch['learning_rate']:>8g} {epoch['pooling']:>9} {epoch['epoch']:>3} "
            f"{100 * epoch['best_score']:>18.2f} {head:>16} {params['n_hidden']:>9} "
            f"{params['C']:>8g} {100 * epoch['linear_head_accuracy']:>12.2f} "
            f"{epoch['seconds']['bp_epoch']:>10.1f}"
        )
    best = result.best_config
    if args.selection != "best":
        print(_selection_line(args.selection, result.standard_error))
    print(
        f"chosen: learning_rate={best.learning_rate:g} pooling={best.pooling} "
        f"bp_epochs={best.bp_epochs} activation={best.activation} "
        f"standardize={best.standardize} n_hidden={best.n_hidden} C={best.C:g}; "
        f"train with: eft train --config {out / 'tuned_config.json'} ..."
    )
    return 0


def command_experiment(args: argparse.Namespace) -> int:
    from eft.checkpoint import finished_parts
    from eft.experiment import format_tables, load_experiment, run_experiment

    spec = load_experiment(args.config)
    output = args.output or f"benchmarks/results/experiment_{Path(args.config).stem}"
    _refuse_file(output, "--output")
    checkpoint = None if args.no_checkpoint else Path(f"{Path(output)}.checkpoint")
    try:
        with _new_folders_go_on_input_error(
            checkpoint, _topmost_new(Path(output)), finished=finished_parts
        ):
            results = run_experiment(
                spec,
                seeds=args.seeds,
                data_dir=args.data_dir,
                model=args.model,
                max_train=args.max_train,
                output=output,
                progress=not args.quiet,
                flops=args.flops,
                checkpoint_dir=checkpoint,
                trust_remote_code=args.trust_remote_code,
            )
    except KeyboardInterrupt:
        kept = (
            f" Finished runs and the fit in progress are kept in {checkpoint}: run the same "
            "command again to continue."
            if checkpoint is not None and checkpoint.exists()
            else ""
        )
        print(f"eft: interrupted; no tables were written.{kept}", file=sys.stderr)
        return 130
    print(format_tables(results))
    print(f"results written to {output}/")
    return 0


def command_bench(args: argparse.Namespace) -> int:
    from eft.benchmark import (
        DEFAULT_OUTPUT_DIR,
        bench_checkpoint_dir,
        canonical_dataset,
        run_benchmark,
    )
    from eft.checkpoint import finished_parts

    canonical_dataset(args)  # before the checkpoint's name, which holds it
    _refuse_file(args.output_dir or DEFAULT_OUTPUT_DIR, "--output-dir")
    try:
        output = _topmost_new(Path(args.output_dir or DEFAULT_OUTPUT_DIR))
        with _new_folders_go_on_input_error(
            bench_checkpoint_dir(args), output, finished=finished_parts
        ):
            run_benchmark(args)
    except KeyboardInterrupt:  # run_benchmark said what is kept for the same command
        return 130
    return 0


def _refuse_file(path: str | os.PathLike, option: str) -> None:
    """A folder to write into must not be a file, and must be writable (found before the
    work, not after it)."""
    from eft.atomic import check_writable

    if Path(path).exists() and not Path(path).is_dir():
        raise InputError(f"{option} {path} is a file; give a folder to write the results into.")
    check_writable(Path(path) / "results")  # what is written goes into the folder


def _refuse_folder(path: str | os.PathLike | None, option: str) -> None:
    """A file to write must not be a folder, and its folder must be writable."""
    from eft.atomic import check_writable

    if path is not None and Path(path).is_dir():
        raise InputError(f"{option} {path} is a folder; give the path of the file to write.")
    if path is not None and str(path) != "-":
        check_writable(path)


def _topmost_new(folder: Path) -> Path:
    """The highest folder of ``folder``'s path that does not exist yet (``folder`` itself if
    its parent exists): what writing into ``folder`` would create."""
    folder = folder.absolute()
    while not folder.parent.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


@contextlib.contextmanager
def _new_folders_go_on_input_error(
    checkpoint: Path | None, *outputs: Path, finished: Callable[[Path], int]
) -> Iterator[None]:
    """Folders a command creates (its checkpoint, its output) go again when it stops on an
    input error before finishing anything (a bad --model, an option the first fit refuses):
    the corrected command then starts afresh instead of being refused as another run. Work
    finished before the error (``finished(checkpoint)`` parts, or files in the outputs without
    a checkpoint) is kept for the same command, as after an interruption."""
    new = [f for f in (checkpoint, *outputs) if f is not None and not f.exists()]
    try:
        yield
    except InputError:
        if checkpoint is not None:
            done = checkpoint.exists() and finished(checkpoint) > 0
        else:
            done = any(p.is_file() for f in outputs if f.exists() for p in f.rglob("*"))
        if not done:
            for folder in new:
                shutil.rmtree(folder, ignore_errors=True)
        raise


COMMANDS = {
    "train": command_train,
    "evaluate": command_evaluate,
    "predict": command_predict,
    "export": command_export,
    "data": command_data,
    "compare": command_compare,
    "experiment": command_experiment,
    "tune": command_tune,
    "bench": command_bench,
}


# Commands that run whole studies in one process: under torchrun every rank would run all of
# it and write the same files. `eft train` is the command made for several processes.
SINGLE_PROCESS_COMMANDS = ("experiment", "tune", "bench")


def _refuse_distributed_launch(command: str) -> None:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if command in SINGLE_PROCESS_COMMANDS and world_size > 1:
        raise InputError(
            f"`eft {command}` runs in one process, but this is a distributed launch "
            f"(WORLD_SIZE={world_size}): every rank would run all of it and write the same "
            f"files. Run `eft {command}` without torchrun / accelerate launch; `eft train` is "
            "the command that trains on several processes."
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "predict" and not any(e.startswith("-") for e in extra):
        args.texts = [*args.texts, *extra]  # texts after an option (argparse stops at it)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    formatwarning = warnings.formatwarning  # put back as found
    try:
        _refuse_distributed_launch(args.command)
        warnings.formatwarning = functools.partial(_format_warning, others=formatwarning)
        return COMMANDS[args.command](args)
    except InputError as error:
        print(f"eft: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("eft: interrupted; no partial output was written.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `eft predict ... | head`: the reader has what it wanted
        # what is left unwritten goes nowhere (Python's own flush at exit would fail too)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a file descriptor
            pass
        return 141  # as a process ended by SIGPIPE (128 + 13)
    except OSError as error:  # the system refused a read or write (a full disk, permissions)
        where = f": {error.filename}" if error.filename else ""
        print(f"eft: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = formatwarning
        _end_process_group()


def _format_warning(message, category, filename, lineno, line=None, *, others) -> str:
    """eft's own warnings as one line, ``eft: warning: ...``, as its errors are (not with the
    path and source line of the code that warned); other libraries' as ``others`` formats
    them (the format the command found)."""
    if Path(filename).resolve().parent != Path(__file__).resolve().parent:
        return others(message, category, filename, lineno, line)
    return f"eft: warning: {message}\n"


def _end_process_group() -> None:
    """Destroy torch.distributed's default group (opened by accelerate under ``torchrun``).

    A gloo rank that exits with its group open can abort while the interpreter shuts down
    ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489): gloo's
    threads still run. Each rank ends its own group; that the group is really freed (and its
    threads joined) depends on :mod:`eft.backprop` importing ``torch.distributed.nn`` first.
    """
    torch = sys.modules.get("torch")  # no torch imported: no group to end
    if torch is None or not torch.distributed.is_available():
        return
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
