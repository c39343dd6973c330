"""Reproduce a paper table: run every row (method) of an experiment config over seeds.

A config is a TOML file (see ``experiments/``)::

    dataset = "meld"            # a name of eft.datasets
    metric = "weighted_f1"      # the paper's metric for the table
    title = "MELD (paper Table 2)"
    [defaults]                  # EFTConfig fields shared by every row
    learning_rate = 5e-5
    [[rows]]
    name = "EFT"                # the row label
    bp_epochs = 1               # EFTConfig fields of this row ...
    context_past = 0            # ... plus the EFT* context budgets (tokens, paper 4.3)
    context_future = 0
    baseline = false            # the standard fine-tuning row the others are tested against

For each row and seed it trains on the train split (early stopping on validation for
``method="bp"``), predicts the test split, and records the score, the per-phase times and
the predictions. The output folder gets ``results.json``, ``table.md`` (paper layout: score,
TTM in minutes, BP epochs, the double dagger where a row is not significantly worse than the
baseline by a paired bootstrap), Table 6 (per-phase times of every row) and, when FLOPs
were counted, Table 7.

With ``checkpoint_dir`` (``eft experiment`` keeps ``<output>.checkpoint``) an interrupted
experiment continues when run again: every finished run (row and seed) is kept there, and the
run in progress continues from its last BP epoch (see :class:`eft.checkpoint.RunProgress`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eft.atomic import json_default, write_text
from eft.checkpoint import RunProgress, json_digest, resumable_fit
from eft.classifier import EFTClassifier
from eft.config import EFTConfig
from eft.errors import InputError
from eft.metrics import METRICS, classification_scores, mean_std, paired_bootstrap
from eft.provenance import machine_info, machine_markdown

ROW_KEYS = {"name", "baseline", "context_past", "context_future"}


@dataclass
class Row:
    """One table row: a method and its hyper-parameters."""

    name: str
    config: dict[str, Any]
    context_past: int = 0
    context_future: int = 0
    baseline: bool = False


@dataclass
class Experiment:
    """A parsed experiment config."""

    dataset: str
    metric: str
    title: str
    rows: list[Row]
    dataset_options: dict[str, Any] = field(default_factory=dict)


def _boolean(value: Any, path: str | Path, row: str) -> bool:
    """A row's ``baseline``: a TOML true or false (the string "no" is not false)."""
    if not isinstance(value, bool):
        raise InputError(
            f"Experiment {path}: row {row!r} has baseline = {value!r}; write true or false."
        )
    return value


def load_experiment(path: str | Path) -> Experiment:
    """Parse and check an experiment TOML file."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"Cannot read experiment {path}: {error}") from error
    for key in ("dataset", "metric", "rows"):
        if key not in raw:
            raise InputError(f"Experiment {path} lacks the field {key!r}.")
    if raw["metric"] not in METRICS:  # refused now, not after the first row has trained
        raise InputError(
            f"Experiment {path}: metric {raw['metric']!r} is not one of {', '.join(METRICS)}."
        )
    defaults = dict(raw.get("defaults", {}))
    rows = []
    for index, spec in enumerate(raw["rows"]):
        spec = dict(spec)
        if "name" not in spec:
            raise InputError(f"Experiment {path}: row {index + 1} has no name.")
        config = {**defaults, **{k: v for k, v in spec.items() if k not in ROW_KEYS}}
        if "trust_remote_code" in config:  # a file does not turn remote code on
            raise InputError(
                f"Experiment {path}: trust_remote_code is not an experiment setting; allow a "
                f"model's custom code on the command line (eft experiment --trust-remote-code)."
            )
        EFTConfig.from_dict(config)  # fail on a bad field now, not after an hour
        rows.append(
            Row(
                name=spec["name"],
                config=config,
                context_past=int(spec.get("context_past", 0)),
                context_future=int(spec.get("context_future", 0)),
                baseline=_boolean(spec.get("baseline", False), path, spec["name"]),
            )
        )
    if sum(row.baseline for row in rows) > 1:
        raise InputError(f"Experiment {path}: more than one row is marked baseline.")
    files: dict[str, str] = {}  # rows are kept, and their predictions written, by name
    for row in rows:
        other = files.get(_slug(row.name))
        files[_slug(row.name)] = row.name
        if other is not None:
            same = "the same name" if other == row.name else "names that give the same file name"
            raise InputError(
                f"Experiment {path}: rows {other!r} and {row.name!r} have {same} "
                f"({_slug(row.name)}_seed*.jsonl); give each row its own name."
            )
    return Experiment(
        dataset=raw["dataset"],
        metric=raw["metric"],
        title=raw.get("title", raw["dataset"]),
        rows=rows,
        dataset_options=dict(raw.get("dataset_options", {})),
    )


def _inputs(split, row: Row, tokenizer) -> list[str]:
    if not (row.context_past or row.context_future):
        return list(split.texts)
    from eft.context import build_context_inputs

    return build_context_inputs(split, tokenizer, row.context_past, row.context_future)


def run_experiment(
    experiment: Experiment,
    seeds: int = 3,
    data_dir: str | None = None,
    model: str | None = None,
    max_train: int | None = None,
    output: str | Path | None = None,
    progress: bool = True,
    flops: bool = False,
    checkpoint_dir: str | Path | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Run every row for ``seeds`` seeds; write results, predictions and tables to ``output``.
    ``trust_remote_code`` lets every row's model run its custom code.

    With ``checkpoint_dir``, finished runs are kept there and a later call with the same
    experiment, options and data skips them (module notes); the folder goes at the end."""
    from eft import datasets
    from eft.encoder import load_tokenizer

    data = datasets.load(experiment.dataset, data_dir=data_dir, **experiment.dataset_options)
    for split in ("train", "test"):
        if split not in data.splits:
            raise InputError(
                f"Dataset {experiment.dataset} has no {split} split here (found: "
                f"{', '.join(data.splits) or 'none'}); see `eft data {experiment.dataset}`."
            )
    train = data.splits["train"]
    if max_train is not None:  # 0 or a negative number is refused (0 kept every row)
        train = datasets.subsample(train, max_train, seed=0)
    validation, test = data.splits.get("validation"), data.splits["test"]
    for row in experiment.rows:  # refused now, not after the rows before it have trained
        config = EFTConfig.from_dict(row.config)
        if validation is None and config.method == "bp" and config.early_stopping_patience:
            raise InputError(
                f"Experiment row {row.name!r} stops early (early_stopping_patience), which needs "
                f"validation data, and {experiment.dataset} has no validation split here: set "
                f"validation_fraction under [dataset_options], or drop the patience."
            )
    out = Path(output) if output else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "title": experiment.title,
        "dataset": experiment.dataset,
        "metric": experiment.metric,
        "seeds": seeds,
        "max_train": max_train,
        "sizes": {"train": len(train), "validation": len(validation or []), "test": len(test)},
        "machine": machine_info(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "rows": [],
    }
    digest = json_digest(
        dataclasses.asdict(experiment),
        [seeds, model, max_train, flops],
        *(
            [list(split.texts), list(split.labels)]
            for split in (train, validation, test)
            if split is not None
        ),
    )
    kept = RunProgress.open(checkpoint_dir, "experiment", digest)
    kept.add_process(results["machine"])
    if kept.continued and progress:
        print(
            f"continuing the interrupted experiment in {checkpoint_dir} (finished runs: "
            f"{len(kept.kept)}); a fit in progress continues from its last BP epoch",
            flush=True,
        )
    tokenizers: dict[str, Any] = {}
    for row in experiment.rows:
        config_values = {
            **row.config,
            "progress": progress,
            "flops": flops,
            "trust_remote_code": trust_remote_code,
        }
        if model:
            config_values["model"] = model
        row_config = EFTConfig.from_dict(config_values)
        key = str(row_config.model)
        if key not in tokenizers and (row.context_past or row.context_future):
            tokenizers[key] = load_tokenizer(row_config.model, row_config.trust_remote_code)
        tokenizer = tokenizers.get(key)
        # the inputs (with EFT* context) are the same for every seed: build them once
        train_texts = _inputs(train, row, tokenizer)
        test_texts = _inputs(test, row, tokenizer)
        eval_texts = eval_labels = None  # EFT needs no validation pass while training
        if validation and row_config.method == "bp":
            eval_texts, eval_labels = _inputs(validation, row, tokenizer), list(validation.labels)
        runs = []
        for seed in _seed_range(seeds):
            part = f"{row.name}/seed{seed}"
            if part in kept.parts:
                run = kept.parts[part]
                message = "kept from the earlier process"
            else:
                run = _train_and_test(
                    EFTConfig.from_dict({**config_values, "seed": seed}),
                    (train_texts, list(train.labels), eval_texts, eval_labels),
                    (test_texts, list(test.labels)),
                    kept.part_folder(part),
                )
                kept.keep({part: run})
                message = f"train {run['timings']['train']:.1f} s"
            runs.append(run)
            if out:
                path = out / f"{_slug(row.name)}_seed{seed}.jsonl"
                _write_predictions(path, test, run["predictions"])
            if progress:
                score = run["scores"][experiment.metric]
                print(
                    f"[{row.name}] seed {seed}: {experiment.metric} {score:.2f}, {message}",
                    flush=True,
                )
        results["rows"].append(_summarise(row, runs, experiment.metric))
    _significance(results, list(test.labels), experiment.metric)
    for row in results["rows"]:
        for run in row["runs"]:
            run.pop("predictions")
    if kept.continued:
        results["resumed"] = kept.resumed()  # runs measured by an earlier process
    if out:
        write_text(out / "results.json", json.dumps(results, indent=2, default=json_default) + "\n")
        write_text(out / "table.md", format_tables(results))
        _remove_other_seeds(out, experiment, seeds)
    kept.finish()
    return results


def _seed_range(seeds: int) -> range:
    """The seeds of a run with ``seeds`` seeds: 42, 43, ..."""
    return range(42, 42 + seeds)


def _remove_other_seeds(out: Path, experiment: Experiment, seeds: int) -> None:
    """Remove the rows' prediction files of seeds this run did not make (an earlier run into
    ``out`` with more ``seeds``), which results.json no longer describes."""
    for row in experiment.rows:
        pattern = re.compile(rf"{re.escape(_slug(row.name))}_seed(\d+)\.jsonl")
        for path in out.iterdir():
            match = pattern.fullmatch(path.name)
            if match and int(match.group(1)) not in _seed_range(seeds) and path.is_file():
                path.unlink()


def _train_and_test(
    config: EFTConfig,
    train_data: tuple[list[str], list[Any], list[str] | None, list[Any] | None],
    test_data: tuple[list[str], list[Any]],
    checkpoint: Path | None,
) -> dict[str, Any]:
    """One run of a row: fit (continuing from ``checkpoint`` where an interrupted run left
    one; saving there after every BP epoch), predict the test texts; its record."""
    config, resume, done = resumable_fit(config, checkpoint)
    clock = time.perf_counter()
    clf = EFTClassifier(config).fit(*train_data, resume_from=resume)
    predictions = clf.predict(test_data[0]).tolist()
    run = {
        "seed": config.seed,
        "scores": classification_scores(test_data[1], predictions),
        "timings": clf.timings_,
        "flops": clf.flops_,
        "bp_epochs_run": len(clf.history_.get("bp_epoch_seconds", [])),
        "bp_best_epoch": clf.history_.get("bp_best_epoch"),
        "history": clf.history_,
        "wall_seconds": time.perf_counter() - clock,
        "predictions": predictions,
    }
    if done is not None:  # its first epochs were timed by an earlier process
        run["continued_after_epoch"] = done
    return run


def _summarise(row: Row, runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    mean, std = mean_std([r["scores"][metric] for r in runs])
    train_minutes = [r["timings"]["train"] / 60 for r in runs]
    phases = {
        phase: float(np.mean([r["timings"].get(phase, 0.0) for r in runs]))
        for phase in ("bp", "feedforward", "elm", "train", "total")
    }
    flops = None
    if all(r["flops"] for r in runs):
        flops = {k: float(np.mean([r["flops"][k] for r in runs])) for k in runs[0]["flops"]}
    return {
        "name": row.name,
        "baseline": row.baseline,
        "config": row.config,
        "context_past": row.context_past,
        "context_future": row.context_future,
        "score_mean": mean,
        "score_std": std,
        "accuracy_mean": float(np.mean([r["scores"]["accuracy"] for r in runs])),
        "ttm_minutes_mean": float(np.mean(train_minutes)),
        "phase_seconds_mean": phases,
        "bp_epochs_run": [r["bp_epochs_run"] for r in runs],
        "flops_mean": flops,
        "runs": runs,
    }


def _significance(results: dict[str, Any], truth: list[Any], metric: str) -> None:
    """Paired bootstrap of every row against the baseline row, on the first seed's predictions."""
    baseline = next((r for r in results["rows"] if r["baseline"]), None)
    if baseline is None:
        return
    reference = baseline["runs"][0]["predictions"]
    for row in results["rows"]:
        if row is baseline:
            continue
        test = paired_bootstrap(truth, reference, row["runs"][0]["predictions"], metric=metric)
        row["bootstrap_vs_baseline"] = {
            k: test[k] for k in ("p_value", "p_value_worse", "comparable", "difference")
        }


def format_tables(results: dict[str, Any]) -> str:
    """Markdown tables in the paper's layout (Tables 2-7)."""
    metric = results["metric"]
    seeds = results["seeds"]
    lines = [
        f"# {results['title']}",
        "",
        f"Test {metric} (mean{' ± std' if seeds > 1 else ''} over {seeds} seed"
        f"{'s' if seeds > 1 else ''}), training time TTM (BP + feedforward + I-ELM, minutes) "
        f"and BP epochs. Train/validation/test sizes: {results['sizes']['train']} / "
        f"{results['sizes']['validation']} / {results['sizes']['test']}.",
        "‡: not significantly worse than the baseline (paired bootstrap, 1,000 resamples, "
        "p >= 0.05).",
        "",
        f"| Method | {metric} |{' accuracy |' if metric != 'accuracy' else ''} TTM (min) "
        f"| BP epochs |",
        "|---|---|---|---|" + ("---|" if metric != "accuracy" else ""),
    ]
    for row in results["rows"]:
        mark = ""
        test = row.get("bootstrap_vs_baseline")
        if test and test["comparable"]:
            mark = " ‡"
        score = f"{row['score_mean']:.2f}" + (f" ± {row['score_std']:.2f}" if seeds > 1 else "")
        epochs = "/".join(
            f"{r['bp_epochs_run']}"
            + (
                f" (best {r['bp_best_epoch']})"
                if r["bp_best_epoch"] and r["bp_best_epoch"] != r["bp_epochs_run"]
                else ""
            )
            for r in row["runs"]
        )
        label = row["name"] + (" (baseline)" if row["baseline"] else "")
        accuracy = f" {row['accuracy_mean']:.2f} |" if metric != "accuracy" else ""
        lines.append(
            f"| {label} | {score}{mark} |{accuracy} {row['ttm_minutes_mean']:.2f} | {epochs} |"
        )
    eft_rows = [r for r in results["rows"] if r["config"].get("method", "eft") == "eft"]
    lines += [
        "",
        "## Training time per phase (paper Table 6, seconds)",
        "",
        "| Method | BP | feedforward | I-ELM | TTM | whole fit |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        p = row["phase_seconds_mean"]
        lines.append(
            f"| {row['name']} | {p['bp']:.1f} | {p['feedforward']:.1f} | {p['elm']:.2f} | "
            f"{p['train']:.1f} | {p['total']:.1f} |"
        )
    if any(r["flops_mean"] for r in eft_rows):
        lines += [
            "",
            "## FLOPs per phase (paper Table 7)",
            "",
            "| Method | BP feature extractor | BP classifier | feedforward | I-ELM |",
            "|---|---|---|---|---|",
        ]
        for row in eft_rows:
            f = row["flops_mean"] or {}
            cells = [
                f"{f.get(k, 0):.3e}"
                for k in ("bp_feature_extractor", "bp_classifier", "feedforward", "elm")
            ]
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", "## Machine", "", machine_markdown(results["machine"])]
    if "resumed" in results:
        resumed = results["resumed"]
        lines.append(
            f"- Resumed after an interruption ({len(resumed['processes'])} processes, "
            f"{'same machine' if resumed['same_machine'] else 'DIFFERENT machines'}); runs "
            f"measured by an earlier process: {', '.join(resumed['parts_from_earlier_process'])}"
            " (and the first epochs of any run with `continued_after_epoch` in results.json)."
        )
    if results.get("note"):
        lines += ["", f"Note: {results['note']}"]
    lines.append("")
    return "\n".join(lines)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _write_predictions(path: Path, split, predictions: list[Any]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for index, (text, label, predicted) in enumerate(
            zip(split.texts, split.labels, predictions, strict=True)
        ):
            record = {"id": index, "text": text, "label": label, "prediction": predicted}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
