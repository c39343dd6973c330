"""Helpers shared by the benchmark scripts: where results go, and JSON + Markdown output.

The machine description (CPU, versions, threads, command, commit, load) comes from
:mod:`eft.provenance`, the same as ``eft bench`` and ``eft experiment`` record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
sys.path.insert(0, str(REPO_ROOT / "src"))

from eft.benchmark import load_splits, write_report  # noqa: E402
from eft.provenance import (  # noqa: E402, F401  (re-exported for the scripts)
    load_average,
    machine_info,
    machine_markdown,
    peak_rss_mb,
)


def data_root() -> Path:
    """``$EFT_DATA_DIR`` (a relative path is read from the repository root), else ../shared/data."""
    path = Path(os.environ.get("EFT_DATA_DIR", "../shared/data"))
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def load_dataset_splits(args: argparse.Namespace):
    """``eft.benchmark.load_splits`` for the options of ``add_data_arguments``: train,
    validation, test and the dataset's options (the data from ``--data-dir`` or
    :func:`data_root`). A limit of 0 keeps the whole split, as committed commands such as
    ``onnx_export.py --max-train 0`` use it (``eft bench`` refuses 0)."""

    def limit(value: int | None) -> int | None:  # the scripts' 0 is the whole split
        return value or None

    return load_splits(
        args.dataset,
        args.data_dir or data_root(),
        limit(args.max_train),
        limit(args.max_validation),
        limit(args.max_test),
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats are printed with 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def write_results(stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``results/<stem>.json`` and ``results/<stem>.md``; returns both paths."""
    return write_report(RESULTS_DIR, stem, payload, markdown)


def rule_choice_results(name: str) -> dict[str, dict[str, Any]]:
    """The result files ``rule_choice.py`` wrote for the bench run ``name`` (its stem without
    ``bench_``), read once: tuning rule -> its JSON."""
    from eft.tuning import SELECTIONS

    return {
        selection: json.loads(path.read_text("utf-8"))
        for selection in SELECTIONS
        if (path := RESULTS_DIR / f"rule_choice_{name}_{selection}.json").is_file()
    }


def tuned_apart(
    name: str, results: dict[str, dict[str, Any]] | None = None
) -> tuple[dict[str, Any], str | None]:
    """The tuning tables that ``rule_choice.py --tune`` made for the untuned run ``name`` and
    the result file that holds them, or ``({}, None)``; ``results``: its
    :func:`rule_choice_results`, where already read."""
    results = rule_choice_results(name) if results is None else results
    for selection, result in results.items():
        if tuning := result.get("tuning"):
            return tuning, f"rule_choice_{name}_{selection}.json"
    return {}, None


def tuning_record(
    task: str,
    args: argparse.Namespace,
    data: dict[str, Any],
    options: dict,
    result: Any,
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The JSON record of a ``--tune`` run of a script with its own task (``data``: split ->
    ``(texts, labels)``): the task, the options, the sizes, the ``machine`` (described before
    the run) and ``eft tune``'s ``result`` with its seconds."""
    return {
        "task": task,
        "model": "all-MiniLM-L6-v2 (embedded)",
        "seed": args.seed,
        "command_options": vars(args),
        "sizes": {name: len(labels) for name, (_, labels) in data.items()},
        "dataset_options": options,
        "machine": machine,
        "tuning": result.to_dict(),
        "tuning_seconds": sum(row["seconds"]["total"] for row in result.epochs),
    }


def tuning_curve(result: Any) -> list[list[float]]:
    """Rows ``[k, best I-ELM validation score, linear head's]`` (percent) of a tuning run."""
    return [
        [row["epoch"], 100 * row["best_score"], 100 * row["linear_head_accuracy"]]
        for row in result.epochs
    ]


def tune_then_fit(data: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """``eft tune`` (the defaults, the paper's rule) on ``data``'s train and validation
    ``(texts, labels)``, then EFT fitted with the configuration it chose: ``(result, clf)``."""
    from eft import EFTClassifier, EFTConfig
    from eft.tuning import tune

    result = tune(*data["train"], *data["validation"], EFTConfig(seed=seed, progress=False))
    return result, EFTClassifier(result.best_config).fit(*data["train"], *data["validation"])


def write_tuned_results(
    stem: str, title: str, payload: dict[str, Any], result: Any, score: str, test: str
) -> None:
    """Write and print the Markdown of a ``--tune`` run (:func:`tuning_record`): its ``title``,
    the machine, the search, the chosen configuration and ``test``, what EFT with it scored,
    and the validation ``score`` against k."""
    chosen = result.best_config
    payload["machine"]["load_average_at_end"] = load_average()
    curve = tuning_curve(result)
    lines = [
        f"# {title}",
        "",
        machine_markdown(payload["machine"]),
        f"- task: {payload['task']}; sizes: {payload['sizes']}; seed {payload['seed']}; "
        f"selection {result.selection}; tuning took {payload['tuning_seconds']:.0f} s",
        f"- chosen: k = {chosen.bp_epochs}, n_hidden {chosen.n_hidden}, C {chosen.C:g}; "
        f"EFT with it: {test}",
        "",
        markdown_table(["k", f"best I-ELM validation {score}", "linear head"], curve),
    ]
    write_results(stem, payload, "\n".join(lines))
    print("\n".join(lines[-len(curve) - 5 :]))
