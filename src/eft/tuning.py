"""The paper's tuning protocol (section 4.2), done in one fine-tuning run.

The paper increases the BP epochs ``k`` while the validation score improves, then, with that
``k``, increases ``n_hidden``. Here the encoder is fine-tuned once: after every epoch its
features of the training and validation texts are computed (one eval-mode pass each) and the
whole ``n_hidden`` x ``C`` grid is scored by :func:`eft.ielm.sweep` from that one pass. The
search stops at the first epoch whose best validation score drops. Epochs continue from the
checkpoint of the previous one. The learning rate (after the warm-up, if any) decays linearly
to 0 within every epoch and restarts with the next ("linear_per_epoch"), so that the run
stopped after any epoch k is annealed and ``eft train --config`` on the chosen configuration
reproduces the tuned encoder exactly (same seed, same batches). (A constant rate, the
simplest schedule with that property, leaves the encoder unannealed: at the higher learning
rate of EFT's BP stage it cost SST-2 about 2.6 points of validation accuracy at k = 1.)

Choosing k and the head: ``selection="best"`` (the paper's) takes the epoch and head with the
best validation score. ``selection="one_se"`` takes the simplest model whose score is within
one standard error of the best (the "one-standard-error rule" of Hastie, Tibshirani and
Friedman, *Elements of Statistical Learning*, 7.10, as in glmnet's ``lambda.1se``): first the
fewest epochs, then, at that k, the smallest ``n_hidden``. ``selection="one_se_head"`` keeps
the paper's k (the best score) and applies the rule to the head only: at that k, the smallest
``n_hidden`` within one standard error of the best. ``selection="one_se_epoch"`` is the
other half: the rule for k only (the fewest epochs within one standard error of the best),
then, at that k, the head with the best validation score. Each BP epoch is most of EFT's
training time and the head's cost grows as ``n_hidden**2`` (statistics) and ``n_hidden**3``
(solve), while on a validation set of a few hundred examples a gain below the standard error
``sqrt(s (1 - s) / n)`` (about 1 point at 90 % accuracy and n = 800) is noise. The binomial
standard error is exact for accuracy and an approximation for weighted F1.

Optionally the tuner also explores what closes the gap at small k (the paper's "non-optimal"
learning rate for the brief BP stage, the pooled feature, the head's activation and feature
standardisation): one fine-tuning run per learning rate x pooling, and one sweep per
activation x standardisation on each epoch's features.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eft.atomic import atomic_file, json_default, write_text
from eft.checkpoint import (
    STATE_FILE,
    count_in_state,
    json_digest,
    read_checkpoint,
    read_run_state,
)
from eft.classifier import (
    EFTClassifier,
    check_label_form,
    check_texts_and_labels,
    encode_labels,
)
from eft.config import EFTConfig
from eft.errors import InputError
from eft.ielm import ACTIVATIONS, check_sweep_grid, sweep

DEFAULT_N_HIDDEN = (250, 500, 1000, 2000, 4000)
DEFAULT_C = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
TUNING_STATE_FILE = "tuning_state.json"
TUNING_STATE_FORMAT = "eft-tuning-checkpoint-1"


@dataclass
class TuneResult:
    """Validation curves per BP run and epoch, and the chosen configuration."""

    best_config: EFTConfig
    best_score: float
    scoring: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    """One row per (learning rate, pooling, epoch k), in the order they ran."""
    selection: str = "best"
    standard_error: float | None = None
    """Binomial standard error of the best validation score (used by ``one_se``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "scoring": self.scoring,
            "selection": self.selection,
            "standard_error": self.standard_error,
            "best_score": self.best_score,
            "best": {k: getattr(self.best_config, k) for k in TUNED_FIELDS},
            "config": self.best_config.to_dict(),
            "epochs": self.epochs,
        }


SELECTIONS = ("best", "one_se", "one_se_head", "one_se_epoch")

TUNED_FIELDS = (
    "learning_rate",
    "pooling",
    "bp_epochs",
    "activation",
    "standardize",
    "n_hidden",
    "C",
)


def tune(
    texts: Sequence[str],
    labels: Sequence[Any],
    eval_texts: Sequence[str],
    eval_labels: Sequence[Any],
    config: EFTConfig | None = None,
    max_epochs: int = 6,
    n_hidden: Sequence[int] = DEFAULT_N_HIDDEN,
    C: Sequence[float] = DEFAULT_C,
    scoring: str = "accuracy",
    *,
    learning_rates: Sequence[float] | None = None,
    poolings: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    standardize: Sequence[bool] | None = None,
    selection: str = "best",
    checkpoint_dir: str | Path | None = None,
    on_continue: Callable[[int], None] | None = None,
) -> TuneResult:
    """Choose ``bp_epochs``, ``n_hidden`` and ``C`` on validation data (see module notes).

    The BP stage itself can be searched too: every ``learning_rates`` x ``poolings`` pair is
    one more fine-tuning run (each with its own search over k), the costly part. Head variants
    (``activations`` x ``standardize``) are cheap: one more sweep over the same features each.
    ``None`` keeps the value of ``config``. Ties keep the earlier candidate, in the order given.
    ``selection`` picks k and the head: ``"best"`` validation score (the paper),
    ``"one_se"``, the fewest epochs and then the smallest ``n_hidden`` within one standard
    error of the best, ``"one_se_head"``, the paper's k and then the smallest ``n_hidden``
    within one standard error, or ``"one_se_epoch"``, the fewest epochs within one standard
    error and then the best head at that k (see module notes).

    Heads are scored as :func:`eft.ielm.sweep` solves them: once (``n_iter=1``), with the
    config's ``class_weight``, on the leading rows of one random layer drawn for the largest
    ``n_hidden``. The tuned model draws its own layer, and runs the config's ``n_iter``.

    With ``checkpoint_dir`` the run can be interrupted and continued: every finished epoch's
    row and the encoder checkpoint of the fine-tuning run in progress are kept there, and a
    later call with the same data and options continues after the last finished epoch (the
    same rows as an uninterrupted run: training is deterministic and resumes exactly). The
    folder is left for the caller to delete; other data or options there are an InputError.
    ``on_continue(rows)`` is called when a run is continued, after that check.
    """
    base = config or EFTConfig()
    texts, labels = check_texts_and_labels(texts, labels)
    eval_texts, eval_labels = check_texts_and_labels(eval_texts, eval_labels, "validation")
    multi_label = not (isinstance(labels, np.ndarray) and labels.ndim == 1)
    check_label_form(eval_labels, multi_label, "validation")
    if multi_label:  # 0/1 rows; the scores are subset accuracies (or weighted F1 over labels)
        classes, labels = encode_labels(labels)
        _, eval_labels = encode_labels(eval_labels, classes, "validation")
    if max_epochs < 1:
        raise InputError("max_epochs must be >= 1.")
    if base.early_stopping_patience is not None:  # the config it writes is EFT's
        raise InputError(
            "early_stopping_patience (--early-stopping-patience) stops standard fine-tuning; "
            "eft tune stops at the first epoch whose validation score drops and writes an EFT "
            "config, which refuses a patience: drop it."
        )
    if base.elm_from_last_epoch:
        raise InputError(
            "eft tune scores each epoch's heads on features of a separate pass, not fused ones, "
            "so a fused config would not be the one it scored: tune without elm_from_last_epoch "
            "(--fused), then train the chosen config with it (eft train --config "
            "tuned_config.json --fused) and compare on validation data."
        )
    if selection not in SELECTIONS:
        raise InputError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
    grid = {
        "learning_rate": _choices(learning_rates, base.learning_rate, "learning_rates"),
        "pooling": _choices(poolings, base.pooling, "poolings"),
        "activation": _choices(activations, base.activation, "activations"),
        "standardize": _choices(standardize, base.standardize, "standardize"),
    }
    # Reject a bad value now rather than after the first fine-tuning run.
    for lr, pooling in itertools.product(grid["learning_rate"], grid["pooling"]):
        EFTConfig.from_dict({**base.to_dict(), "learning_rate": lr, "pooling": pooling})
    unknown = [a for a in grid["activation"] if a not in ACTIVATIONS]
    if unknown:
        raise InputError(f"Unknown activation(s) {unknown}; choose from {sorted(ACTIVATIONS)}.")
    if not all(isinstance(v, bool) for v in grid["standardize"]):
        raise InputError(f"standardize values must be True or False, got {grid['standardize']}.")
    try:
        check_sweep_grid(n_hidden, C, scoring)
    except ValueError as error:
        raise InputError(str(error)) from error
    heads = list(itertools.product(grid["activation"], grid["standardize"]))
    epochs: list[dict[str, Any]] = []
    state_file = fingerprint = None
    saved: list[dict[str, Any]] = []
    if checkpoint_dir is None:
        workdir = Path(tempfile.mkdtemp(prefix="eft-tune-"))
    else:
        workdir = Path(checkpoint_dir)
        state_file = workdir / TUNING_STATE_FILE
        fingerprint = _fingerprint(
            (texts, labels, eval_texts, eval_labels),
            base,
            grid,
            (max_epochs, list(n_hidden), list(C), scoring),
        )
        saved = _saved_rows(workdir, fingerprint)
        if saved and on_continue is not None:  # told once the run is known to be this one
            on_continue(len(saved))
        workdir.mkdir(parents=True, exist_ok=True)
        if not saved:  # the fingerprint first: the BP checkpoints written next are this run's
            state = {"format": TUNING_STATE_FORMAT, "fingerprint": fingerprint, "rows": []}
            write_text(state_file, json.dumps(state) + "\n")
    try:
        for index, (lr, pooling) in enumerate(
            itertools.product(grid["learning_rate"], grid["pooling"])
        ):
            recipe = {**base.to_dict(), "learning_rate": lr, "pooling": pooling}
            done = [r for r in saved if (r["learning_rate"], r["pooling"]) == (lr, pooling)]
            checkpoint = workdir / f"checkpoint-{index}"
            for row in _tune_bp_run(
                (texts, labels, eval_texts, eval_labels),
                recipe,
                heads,
                (max_epochs, n_hidden, C, scoring),
                checkpoint,
                done,
            ):
                epochs.append(row)
                if state_file is not None and row["epoch"] > len(done):  # a new epoch
                    state = {
                        "format": TUNING_STATE_FORMAT,
                        "fingerprint": fingerprint,
                        "rows": epochs,
                    }
                    write_text(state_file, json.dumps(state, default=json_default) + "\n")
            shutil.rmtree(checkpoint, ignore_errors=True)  # this run's rows are all kept
    finally:
        if checkpoint_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    chosen_row, score, params, standard_error = choose(epochs, len(eval_texts), scoring, selection)
    params = {**params, "bp_epochs": chosen_row["epoch"]}
    chosen = EFTConfig.from_dict(
        {
            **base.to_dict(),
            **params,
            "method": "eft",
            "n_hidden": int(params["n_hidden"]),
            "C": float(params["C"]),
            "lr_schedule": "linear_per_epoch",
            "checkpoint_dir": None,
        }
    )
    return TuneResult(
        best_config=chosen,
        best_score=score,
        scoring=scoring,
        epochs=epochs,
        selection=selection,
        standard_error=standard_error,
    )


def choose(
    rows: Sequence[dict[str, Any]], n_eval: int, scoring: str, selection: str = "best"
) -> tuple[dict[str, Any], float, dict[str, Any], float]:
    """The tuning row and head that ``selection`` picks: the row (:func:`choose_epoch`), the
    validation score and ``best_params`` of the chosen head (the row's best with ``best`` and
    ``one_se_epoch``; with ``one_se`` and ``one_se_head`` the smallest within one standard
    error, :func:`choose_head`), and the standard error."""
    row, standard_error = choose_epoch(rows, n_eval, selection)
    if selection in ("best", "one_se_epoch"):
        return row, row["best_score"], row["best_params"], standard_error
    top = max(r["best_score"] for r in rows)
    score, params = choose_head(row, scoring, top - standard_error)
    return row, score, params, standard_error


def choose_epoch(
    rows: Sequence[dict[str, Any]], n_eval: int, selection: str = "best"
) -> tuple[dict[str, Any], float]:
    """The tuning row (one per BP run and epoch) to use, and the binomial standard error of
    the best score ``s`` (a fraction): ``sqrt(p (1 - p) / (n + 4))`` with the Agresti-Coull
    ``p = (s n + 2) / (n + 4)``, about ``sqrt(s (1 - s) / n)`` but not 0 at ``s = 1``.

    ``"best"`` and ``"one_se_head"``: the highest score, the earliest row on ties.
    ``"one_se"`` and ``"one_se_epoch"``: among the rows within one standard error of the
    best, those with the fewest epochs; of these the highest score, the earliest on ties.
    """
    best = max(rows, key=lambda r: r["best_score"])  # max keeps the first of equal rows
    top = best["best_score"]
    # Agresti-Coull: add 2 successes and 2 failures, so that a perfect score has an error too
    n = max(n_eval, 0) + 4
    adjusted = (top * (n - 4) + 2) / n
    standard_error = float(np.sqrt(adjusted * (1.0 - adjusted) / n))
    if selection not in ("one_se", "one_se_epoch"):
        return best, standard_error
    close = [r for r in rows if r["best_score"] >= top - standard_error]
    fewest = min(r["epoch"] for r in close)
    return max((r for r in close if r["epoch"] == fewest), key=lambda r: r["best_score"]), (
        standard_error
    )


def choose_head(
    row: dict[str, Any], scoring: str, threshold: float
) -> tuple[float, dict[str, Any]]:
    """The smallest head of a tuning row whose validation score reaches ``threshold``: the
    fewest ``n_hidden`` (the Gram matrix and the solve grow as ``n_hidden**2`` and
    ``n_hidden**3``), and at that size the best score (the earliest entry on ties). Returns
    the score and the row's ``best_params`` with that head's activation, standardisation,
    ``n_hidden`` and ``C``."""
    close = [r for r in row["table"] if r[scoring] >= threshold]
    if not close:
        raise ValueError(f"No head reaches {threshold}; the best has {row['best_score']}.")
    smallest = min(r["n_hidden"] for r in close)
    head = max((r for r in close if r["n_hidden"] == smallest), key=lambda r: r[scoring])
    fields = ("activation", "standardize", "n_hidden", "C")
    return head[scoring], {**row["best_params"], **{f: head[f] for f in fields}}


def _fingerprint(
    data: tuple[list[str], np.ndarray, list[str], np.ndarray],
    base: EFTConfig,
    grid: dict[str, list[Any]],
    search: tuple[Any, ...],
) -> str:
    """A digest of everything that decides the tuning rows: data, options and grids."""
    settings = {k: v for k, v in base.to_dict().items() if k not in ("progress", "checkpoint_dir")}
    columns = [d.tolist() if isinstance(d, np.ndarray) else list(d) for d in data]
    return json_digest(settings, grid, search, *columns)


def finished_epochs(checkpoint_dir: str | Path) -> int:
    """How many tuning rows (epochs) an interrupted run left in ``checkpoint_dir``."""
    return count_in_state(Path(checkpoint_dir) / TUNING_STATE_FILE, "rows")


def _saved_rows(checkpoint_dir: Path, fingerprint: str) -> list[dict[str, Any]]:
    if (checkpoint_dir / STATE_FILE).is_file():
        raise InputError(
            f"{checkpoint_dir} is the checkpoint of an interrupted `eft train`, not of a "
            "tuning run: give eft tune another --output (or resume the training first)."
        )
    path = checkpoint_dir / TUNING_STATE_FILE
    if not path.is_file():
        if checkpoint_dir.exists() and any(checkpoint_dir.iterdir()):
            raise InputError(
                f"{checkpoint_dir} is in the way of this tuning run's checkpoint folder and is "
                f"not one (it has no {TUNING_STATE_FILE}): move or delete it, or pass "
                "--no-checkpoint."
            )
        return []
    expected = {"format": TUNING_STATE_FORMAT, "fingerprint": fingerprint}
    return list(read_run_state(path, expected, "`eft tune` run")["rows"])


def _choices(values: Sequence[Any] | None, default: Any, name: str) -> list[Any]:
    if values is None:
        return [default]
    values = list(dict.fromkeys(values))  # unique, in order
    if not values:
        raise InputError(f"{name} needs at least one value (or None for the config's).")
    return values


def _tune_bp_run(
    data: tuple[list[str], np.ndarray, list[str], np.ndarray],
    recipe: dict[str, Any],
    heads: list[tuple[str, bool]],
    grid: tuple[int, Sequence[int], Sequence[float], str],
    checkpoint: Path,
    done: Sequence[dict[str, Any]] = (),
) -> Iterator[dict[str, Any]]:
    """One fine-tuning run, epoch by epoch; after each, every head variant's n_hidden x C
    sweep on the epoch's features. Stops after the first epoch whose best score drops.
    ``done`` holds the rows of an interrupted run's finished epochs: they are yielded again,
    and training continues from ``checkpoint`` after them."""
    max_epochs = grid[0]
    best_so_far = None
    for k in range(1, max_epochs + 1):
        row = (
            done[k - 1] if k <= len(done) else _tune_epoch(data, recipe, heads, grid, k, checkpoint)
        )
        yield row
        if best_so_far is not None and row["best_score"] < best_so_far:
            return  # the paper's rule: stop when the validation score starts to drop
        best_so_far = (
            row["best_score"] if best_so_far is None else max(best_so_far, row["best_score"])
        )


def _tune_epoch(
    data: tuple[list[str], np.ndarray, list[str], np.ndarray],
    recipe: dict[str, Any],
    heads: list[tuple[str, bool]],
    grid: tuple[int, Sequence[int], Sequence[float], str],
    k: int,
    checkpoint: Path,
) -> dict[str, Any]:
    """Fine-tune to epoch k (continuing from the checkpoint of epoch k - 1, or of k itself
    when an interrupted run got that far) and score every head on its features."""
    texts, labels, eval_texts, eval_labels = data
    _, n_hidden, C, scoring = grid
    classes = None if labels.ndim == 2 else np.unique(labels)  # multi-label: 0/1 columns
    clock = time.perf_counter()
    step = EFTConfig.from_dict(
        {
            **recipe,
            "method": "bp",
            "bp_epochs": k,
            "lr_schedule": "linear_per_epoch",
            "early_stopping_patience": None,
            "checkpoint_dir": str(checkpoint),
            "tune_thresholds": False,  # the sweep scores the heads; the tuned model tunes its own
        }
    )
    resume = checkpoint if (checkpoint / STATE_FILE).is_file() else None
    resumed_epoch = resume is not None and read_checkpoint(resume)["epoch"] == k
    clf = EFTClassifier(step).fit(texts, labels, resume_from=resume)
    bp_seconds = clf.history_["bp_epoch_seconds"][-1]  # this epoch (timings_: all k)
    class_weight = None  # the head's weights, as EFTClassifier gives its I-ELM
    if classes is not None and recipe.get("class_weight") is not None:
        counts = np.array([np.sum(labels == c) for c in clf.classes_])
        by_index = clf._class_weights(counts, clf.classes_)
        class_weight = {c: by_index[i] for i, c in enumerate(clf.classes_)}
    clock_features = time.perf_counter()
    train_features = clf.features(texts)
    eval_features = clf.features(eval_texts)
    feature_seconds = time.perf_counter() - clock_features
    batches = [
        (train_features[i : i + 4096], np.asarray(labels[i : i + 4096]))
        for i in range(0, len(texts), 4096)
    ]
    table: list[dict[str, Any]] = []
    best_params: dict[str, Any] | None = None
    best_head = -np.inf
    sweep_seconds = 0.0
    for activation, scaled in heads:
        result = sweep(
            batches,
            eval_features,
            np.asarray(eval_labels),
            n_hidden=n_hidden,
            C=C,
            activation=activation,
            standardize=scaled,
            class_weight=class_weight,
            classes=classes,
            scoring=scoring,
            random_state=recipe["seed"],
        )
        sweep_seconds += sum(result.seconds.values())
        head = {"activation": activation, "standardize": scaled}
        table += [{**head, **r} for r in result.table]
        score = max(r[scoring] for r in result.table)
        if score > best_head:
            best_head = score
            best_params = {**head, **result.best_params}
    with torch.no_grad():  # the BP stage's own linear head, on the same features
        logits = clf.model_.head(torch.from_numpy(eval_features).to(clf.device_))
    logits = logits.cpu().numpy()
    if clf.multi_label_:  # subset accuracy of a sigmoid per label
        linear = float(((logits > 0) == (eval_labels == 1)).all(1).mean())
    else:
        linear = float(np.mean(clf.classes_[logits.argmax(1)] == eval_labels))
    return {
        "learning_rate": recipe["learning_rate"],
        "pooling": recipe["pooling"],
        "epoch": k,
        "best_score": best_head,
        "best_params": {
            "learning_rate": recipe["learning_rate"],
            "pooling": recipe["pooling"],
            **best_params,
        },
        "linear_head_accuracy": linear,
        "table": table,
        "seconds": {
            "bp_epoch": bp_seconds,
            "features": feature_seconds,
            "sweep": sweep_seconds,
            # a BP epoch run by an interrupted process counts too (bp_epoch is its time)
            "total": time.perf_counter() - clock + (bp_seconds if resumed_epoch else 0.0),
        },
    }


def write_tuning(result: TuneResult, output: str | Path) -> Path:
    """``tuned_config.json`` (for ``eft train --config``), ``tuning.json`` and, with
    matplotlib, ``tuning.png`` (validation score against k and against n_hidden)."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    # the file users act on goes first and comes back last: a run interrupted between leaves
    # no tuned_config.json beside files of another run (each file is written atomically)
    (out / "tuned_config.json").unlink(missing_ok=True)
    tuning = json.dumps(result.to_dict(), indent=2, default=json_default)
    write_text(out / "tuning.json", tuning + "\n")
    _plot_tuning(result, out)
    config = json.dumps({"config": result.best_config.to_dict()}, indent=2, default=json_default)
    write_text(out / "tuned_config.json", config + "\n")
    return out


def _plot_tuning(result: TuneResult, out: Path) -> None:
    """``tuning.png``: validation score against k and against n_hidden (with matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    runs = list(dict.fromkeys((e["learning_rate"], e["pooling"]) for e in result.epochs))
    for lr, pooling in runs:
        rows = [e for e in result.epochs if (e["learning_rate"], e["pooling"]) == (lr, pooling)]
        name = f" (lr {lr:g}, {pooling})" if len(runs) > 1 else ""
        left.plot(
            [e["epoch"] for e in rows],
            [100 * e["best_score"] for e in rows],
            "o-",
            label=f"I-ELM (best head){name}",
        )
        left.plot(
            [e["epoch"] for e in rows],
            [100 * e["linear_head_accuracy"] for e in rows],
            "s--",
            label=f"linear head (accuracy){name}",
        )
    left.set(
        xlabel="BP epochs k",
        ylabel=f"validation {result.scoring} (%)",
        title="validation score against k",
    )
    left.legend(fontsize="small")
    best = result.best_config
    chosen = next(
        e
        for e in result.epochs
        if (e["learning_rate"], e["pooling"], e["epoch"])
        == (best.learning_rate, best.pooling, best.bp_epochs)
    )
    head_rows = [
        r
        for r in chosen["table"]
        if (r["activation"], r["standardize"]) == (best.activation, best.standardize)
    ]
    for c in sorted({r["C"] for r in head_rows}):
        rows = sorted((r for r in head_rows if r["C"] == c), key=lambda r: r["n_hidden"])
        right.plot(
            [r["n_hidden"] for r in rows],
            [100 * r[result.scoring] for r in rows],
            "o-",
            label=f"C={c:g}",
        )
    right.set(
        xscale="log",
        xlabel="hidden nodes nh",
        ylabel=f"validation {result.scoring} (%)",
        title=f"validation score against nh (k={result.best_config.bp_epochs})",
    )
    sizes = sorted({r["n_hidden"] for r in head_rows})
    right.set_xticks(sizes, [str(n) for n in sizes])
    right.minorticks_off()
    left.set_xticks(sorted({e["epoch"] for e in result.epochs}))
    right.legend(fontsize="small")
    figure.tight_layout()
    with atomic_file(out / "tuning.png") as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
