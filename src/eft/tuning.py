"""The paper's tuning protocol (section 4.2), done in one fine-tuning run.

The paper increases the BP epochs ``k`` while the validation score improves, then, with that
``k``, increases ``n_hidden``. Here the encoder is fine-tuned once: after every epoch its
features of the training and validation texts are computed (one eval-mode pass each) and the
whole ``n_hidden`` x ``C`` grid is scored by :func:`eft.ielm.sweep` from that one pass. The
search stops at the first epoch whose best validation score drops. Epochs continue from the
checkpoint of the previous one, with a constant learning rate, so that ``eft train --config``
on the chosen configuration reproduces the tuned encoder exactly (same seed, same batches).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eft.classifier import EFTClassifier, check_texts_and_labels
from eft.config import EFTConfig
from eft.errors import InputError
from eft.ielm import sweep

DEFAULT_N_HIDDEN = (250, 500, 1000, 2000, 4000)
DEFAULT_C = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


@dataclass
class TuneResult:
    """Validation curves per BP epoch and the chosen configuration."""

    best_config: EFTConfig
    best_score: float
    scoring: str
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scoring": self.scoring,
            "best_score": self.best_score,
            "best": {k: getattr(self.best_config, k) for k in ("bp_epochs", "n_hidden", "C")},
            "config": self.best_config.to_dict(),
            "epochs": self.epochs,
        }


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
) -> TuneResult:
    """Choose ``bp_epochs``, ``n_hidden`` and ``C`` on validation data (see module notes)."""
    base = config or EFTConfig()
    if base.warmup_ratio:
        raise InputError("Tuning runs with a constant learning rate; set warmup_ratio to 0.")
    texts, labels = check_texts_and_labels(texts, labels)
    eval_texts, eval_labels = check_texts_and_labels(eval_texts, eval_labels, "validation")
    if max_epochs < 1:
        raise InputError("max_epochs must be >= 1.")
    classes = np.unique(labels)
    epochs: list[dict[str, Any]] = []
    best: tuple[float, int, int, float] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="eft-tune-"))
    checkpoint = workdir / "checkpoint"
    try:
        for k in range(1, max_epochs + 1):
            clock = time.perf_counter()
            step = EFTConfig.from_dict(
                {
                    **base.to_dict(),
                    "method": "bp",
                    "bp_epochs": k,
                    "lr_schedule": "constant",
                    "early_stopping_patience": None,
                    "checkpoint_dir": str(checkpoint),
                }
            )
            clf = EFTClassifier(step).fit(texts, labels, resume_from=checkpoint if k > 1 else None)
            bp_seconds = clf.history_["bp_epoch_seconds"][-1]  # this epoch (timings_: all k)
            clock_features = time.perf_counter()
            train_features = clf.features(texts)
            eval_features = clf.features(eval_texts)
            feature_seconds = time.perf_counter() - clock_features
            batches = [
                (train_features[i : i + 4096], np.asarray(labels[i : i + 4096]))
                for i in range(0, len(texts), 4096)
            ]
            result = sweep(
                batches,
                eval_features,
                np.asarray(eval_labels),
                n_hidden=n_hidden,
                C=C,
                activation=base.activation,
                standardize=base.standardize,
                classes=classes,
                scoring=scoring,
                random_state=base.seed,
            )
            with torch.no_grad():  # the BP stage's own linear head, on the same features
                logits = clf.model_.head(torch.from_numpy(eval_features).to(clf.device_))
            linear = float(np.mean(clf.classes_[logits.argmax(1).cpu().numpy()] == eval_labels))
            row = {
                "epoch": k,
                "best_score": max(r[scoring] for r in result.table),
                "best_params": result.best_params,
                "linear_head_accuracy": linear,
                "table": result.table,
                "seconds": {
                    "bp_epoch": bp_seconds,
                    "features": feature_seconds,
                    "sweep": sum(result.seconds.values()),
                    "total": time.perf_counter() - clock,
                },
            }
            epochs.append(row)
            if best is not None and row["best_score"] < best[0]:
                break  # the paper's rule: stop when the validation score starts to drop
            if best is None or row["best_score"] > best[0]:
                best = (
                    row["best_score"],
                    k,
                    result.best_params["n_hidden"],
                    result.best_params["C"],
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    score, k, nh, c = best
    chosen = EFTConfig.from_dict(
        {
            **base.to_dict(),
            "method": "eft",
            "bp_epochs": k,
            "n_hidden": int(nh),
            "C": float(c),
            "lr_schedule": "constant",
            "checkpoint_dir": None,
        }
    )
    return TuneResult(best_config=chosen, best_score=score, scoring=scoring, epochs=epochs)


def write_tuning(result: TuneResult, output: str | Path) -> Path:
    """``tuned_config.json`` (for ``eft train --config``), ``tuning.json`` and, with
    matplotlib, ``tuning.png`` (validation score against k and against n_hidden)."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuned_config.json").write_text(
        json.dumps({"config": result.best_config.to_dict()}, indent=2) + "\n", encoding="utf-8"
    )
    (out / "tuning.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return out
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ks = [e["epoch"] for e in result.epochs]
    left.plot(ks, [100 * e["best_score"] for e in result.epochs], "o-", label="I-ELM (best nh, C)")
    left.plot(
        ks,
        [100 * e["linear_head_accuracy"] for e in result.epochs],
        "s--",
        label="linear head (accuracy)",
    )
    left.set(
        xlabel="BP epochs k",
        ylabel=f"validation {result.scoring} (%)",
        title="validation score against k",
    )
    left.legend()
    chosen = next(e for e in result.epochs if e["epoch"] == result.best_config.bp_epochs)
    for c in sorted({r["C"] for r in chosen["table"]}):
        rows = sorted((r for r in chosen["table"] if r["C"] == c), key=lambda r: r["n_hidden"])
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
    sizes = sorted({r["n_hidden"] for r in chosen["table"]})
    right.set_xticks(sizes, [str(n) for n in sizes])
    right.minorticks_off()
    left.set_xticks(ks)
    right.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "tuning.png", dpi=120)
    plt.close(figure)
    return out
