"""Test what another tuning rule would have picked in a committed ``eft bench --tune`` run.

    python benchmarks/rule_choice.py bench_imdb_5k_one_se_head --selection one_se

``eft bench`` trains EFT with the choice of the rule it was given; on the same validation
curves (the run's tuning tables) every other ``--tune-selection`` picks its own k,
``n_hidden`` and ``C`` (``benchmarks/summary.py``, third table). This script trains EFT with
one such choice on the run's splits, seed, precision and learning-rate schedule, and tests
it. It does not rerun fine-tuning: the test score is compared with the run's committed
``bp`` score, with the paired-bootstrap p-value against ``bp``'s test predictions where the run
kept them (``<run>_predictions.jsonl``; runs before that file existed get none), and its
training time is not a side-by-side ratio. Writes
``results/rule_choice_<run>_<selection>.json`` and ``.md``.

A run trained with a given k, ``n_hidden`` and ``C`` (no ``--tune``) has no tuning tables;
``--tune`` makes them first, as ``eft bench --tune`` would (:func:`eft.tuning.tune` on the
run's training and validation splits, with its EFT settings), writes them to
``results/rule_choice_<run>_tuning/`` as soon as they are done, and records them (with their
time) in the result. Later calls without ``--tune`` reuse those tables (``tuning_from``).

    python benchmarks/rule_choice.py bench_imdb_5k_256tok_full_test_seed43 --tune --selection best
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    data_root,
    load_average,
    machine_info,
    machine_markdown,
    markdown_table,
    tuned_apart,
    write_results,
)

from eft import EFTClassifier, EFTConfig  # noqa: E402
from eft.benchmark import load_splits, read_predictions  # noqa: E402
from eft.metrics import classification_scores, paired_bootstrap  # noqa: E402
from eft.tuning import SELECTIONS, choose, tune, write_tuning  # noqa: E402


def _tuning_base(run: dict) -> EFTConfig:
    """The EFT settings the untuned run trained with, less the k, n_hidden and C to tune."""
    eft = run["methods"]["eft"]["hyper_parameters"]
    keep = ("learning_rate", "batch_size", "max_length", "mixed_precision", "inference_precision")
    model = None if run["model"].endswith("(embedded)") else run["model"]
    return EFTConfig(
        model=model, seed=run["seed"], progress=False, **{name: eft[name] for name in keep}
    )


def _choices_by_selection(tuning: dict, n_eval: int) -> dict[str, dict]:
    """k, n_hidden, C and validation score that each rule picks on the tuning tables."""
    choices = {}
    for selection in SELECTIONS:
        row, score, params, _ = choose(tuning["epochs"], n_eval, tuning["scoring"], selection)
        choices[selection] = {"bp_epochs": row["epoch"], **params, "validation_score": score}
    return choices


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a committed bench stem, e.g. bench_imdb_5k_one_se_head")
    parser.add_argument("--selection", choices=SELECTIONS, required=True)
    parser.add_argument("--data-dir", help="root of the datasets (default: $EFT_DATA_DIR)")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="for a run trained with a given k, n_hidden, C: tune on its splits first",
    )
    args = parser.parse_args(argv)
    run = json.loads((RESULTS_DIR / f"{args.run}.json").read_text("utf-8"))
    tuning, options = run.get("tuning"), run["dataset_options"]
    if options.get("files"):
        parser.error(f"{args.run} is not an `eft bench --dataset NAME` run.")
    if tuning and args.tune:
        parser.error(f"{args.run} has tuning tables: drop --tune.")
    name = f"rule_choice_{args.run.removeprefix('bench_')}"
    tuning_from = None  # the rule_choice result whose tables an untuned run reuses
    if not tuning and not args.tune:
        tuning, tuning_from = tuned_apart(args.run.removeprefix("bench_"))
        if not tuning:
            parser.error(f"{args.run} was trained with a given k, n_hidden and C: add --tune.")
    data_dir = args.data_dir or data_root()
    train, validation, test, _ = load_splits(
        run["dataset"],
        data_dir,
        options["max_train"],
        options["max_validation"],
        options["max_test"],
    )
    sizes = {"train": len(train), "validation": len(validation), "test": len(test)}
    if any(sizes[split] != run["sizes"][split] for split in sizes):
        parser.error(
            f"the data under {data_dir} gives splits of {sizes}, but "
            f"{args.run} ran on {run['sizes']}: point --data-dir (or $EFT_DATA_DIR) at the "
            "datasets the run used."
        )
    predictions_file = RESULTS_DIR / run.get("predictions_file", f"{args.run}_predictions.jsonl")
    labels, by_method = (
        read_predictions(predictions_file) if predictions_file.is_file() else (None, {})
    )
    if labels is not None and labels != list(test.labels):
        parser.error(
            f"{predictions_file.name} holds other test labels than the data here: point "
            "--data-dir (or $EFT_DATA_DIR) at the datasets the run used."
        )
    machine = machine_info()  # before training: its load average is the one at the start
    if args.tune:
        start = time.perf_counter()
        scoring = "weighted_f1" if run["metric"] == "weighted_f1" else "accuracy"
        tuned = tune(
            list(train.texts),
            list(train.labels),
            list(validation.texts),
            list(validation.labels),
            _tuning_base(run),
            scoring=scoring,
            selection=args.selection,
        )
        tuning = {**tuned.to_dict(), "seconds": time.perf_counter() - start}
        tuning_dir = write_tuning(tuned, RESULTS_DIR / f"{name}_tuning")
        print(f"tuned in {tuning['seconds']:.1f} s: {tuning_dir}", flush=True)
    row, score, params, standard_error = choose(
        tuning["epochs"], run["sizes"]["validation"], tuning["scoring"], args.selection
    )
    config = EFTConfig.from_dict(
        {**tuning["config"], **params, "bp_epochs": row["epoch"], "progress": False}
    )
    clf = EFTClassifier(config).fit(list(train.texts), list(train.labels))
    predicted = clf.predict(list(test.texts)).tolist()
    scores = classification_scores(list(test.labels), predicted)
    bp = run["methods"]["bp"]
    p_value = None
    if labels is not None:
        p_value = paired_bootstrap(labels, by_method["bp"], predicted, metric=run["metric"])[
            "p_value_worse"
        ]
    payload = {
        "run": args.run,
        "selection": args.selection,
        "choice": {"bp_epochs": row["epoch"], **params, "validation_score": score},
        "standard_error": standard_error,
        "test_score": scores[run["metric"]],
        "scores": scores,
        "bp_test_score": bp["test_score"],
        "difference_to_bp": scores[run["metric"]] - bp["test_score"],
        "p_value_vs_bp": p_value,  # None: the run kept no predictions
        "train_seconds": clf.timings_["train"],
        "timings": clf.timings_,
        "bp_epochs_of_the_run": bp["bp_epochs_run"],
        "machine": {**machine, "load_average_at_end": load_average()},  # with the command
        "choices_by_selection": _choices_by_selection(tuning, sizes["validation"]),
    }
    if args.tune:  # made here: the run itself has none
        payload["tuning"] = tuning
    if tuning_from:
        payload["tuning_from"] = tuning_from
    markdown = "\n".join(
        [
            f"# {args.selection}'s choice in `{args.run}`, trained and tested",
            "",
            machine_markdown(payload["machine"]),
            "",
            markdown_table(
                ["selection", "k", "n_hidden", "C", "validation", "test", "run's bp", "diff", "p"],
                [
                    [
                        args.selection,
                        row["epoch"],
                        params["n_hidden"],
                        params["C"],
                        100 * score,
                        payload["test_score"],
                        bp["test_score"],
                        payload["difference_to_bp"],
                        "n/a" if p_value is None else p_value,
                    ]
                ],
            ),
            "",
            f"Train {payload['train_seconds']:.1f} s here, in a separate run (not a side-by-side "
            f"ratio); the run's fine-tuning trained {bp['bp_epochs_run']} epochs in "
            f"{bp['train_seconds']:.1f} s.",
            "",
            "Every rule's choice on these validation curves: "
            + "; ".join(
                f"{selection}: k {c['bp_epochs']}, n_hidden {c['n_hidden']}, C {c['C']:g} "
                f"({100 * c['validation_score']:.2f})"
                for selection, c in payload["choices_by_selection"].items()
            )
            + ".",
        ]
        + (
            [
                "",
                f"Tuned here first (the run had no tuning tables) in {tuning['seconds']:.1f} s; "
                "best validation score after each epoch: "
                + ", ".join(f"{100 * e['best_score']:.2f}" for e in tuning["epochs"])
                + f"; tables in `{name}_tuning/`.",
            ]
            if args.tune
            else []
        )
        + (
            ["", f"Tuning tables from `{tuning_from}` (made by `--tune` for this untuned run)."]
            if tuning_from
            else []
        )
    )
    write_results(f"{name}_{args.selection}", payload, markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
