"""Why does fused mode lose quality at k = 1, and which cheap variant keeps it?

    python benchmarks/fused_k1.py --dataset meld [--max-train N] [--max-validation N]
        [--max-test N] [--max-length 128] [--learning-rate 2e-4] [--seed 42]
    python benchmarks/fused_k1.py --summary     # the table of every committed run

Fused mode (``elm_from_last_epoch``) takes the I-ELM statistics from the forward passes of
the last BP epoch: train-mode features (dropout on) from an encoder that is still moving. At
k = 1 that epoch is the only one, and its first batches come from an encoder close to the
pretrained one. This study fine-tunes the encoder for ONE epoch (EFT's BP stage, seed and
rate as ``eft bench``), records every batch's train-mode features in the order they were
trained on, then computes the eval-mode features of the final encoder (what non-fused EFT
uses). On those, the same head search (``eft.ielm.sweep``, n_hidden x C, chosen on
validation) is run for each way of building the statistics:

* ``eval``: eval-mode features of the final encoder (non-fused EFT; a full feature pass);
* ``fused``: every train-mode feature, equal weights (today's fused mode; no pass);
* ``fused_ramp``: train-mode features weighted by their position in the epoch, (b + 1) / B for
  batch b of B (later, less stale batches count more; no pass);
* ``fused_last_half``: only the second half of the epoch's batches (no pass, half the data);
* ``refeed_f``: train-mode features for the last ``f`` of the batches, eval-mode features for
  the rest (a pass over ``1 - f`` of the training set).

Also reported: the cosine similarity of each sample's train-mode feature to its eval-mode
feature by tenth of the epoch (how stale the fused features are), and the measured seconds
of the BP epoch and of the full feature pass, from which each variant's I-ELM stage cost
follows. Writes ``results/fused_k1_<dataset>.json`` and ``.md`` (``_seed<N>`` added to the
name for a seed other than 42).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import (  # noqa: E402
    RESULTS_DIR,
    load_average,
    load_dataset_splits,
    machine_markdown,
    markdown_table,
    write_results,
)

import eft.classifier  # noqa: E402
from eft import EFTClassifier, EFTConfig, IELMClassifier  # noqa: E402
from eft.benchmark import add_data_arguments, run_header  # noqa: E402
from eft.encoder import LengthGroupedBatchSampler  # noqa: E402
from eft.ielm import sweep  # noqa: E402
from eft.metrics import classification_scores, paired_bootstrap  # noqa: E402

METRIC = {"meld": "weighted_f1", "iemocap": "weighted_f1"}
N_HIDDEN = (250, 500, 1000, 2000)
C_VALUES = (0.01, 0.1, 1.0, 10.0, 100.0)
REFEED_FRACTIONS = (0.25, 0.5, 0.75)


class _RecordingBP:
    """Wraps ``train_backprop`` to record the batch order and the train-mode features."""

    def __init__(self) -> None:
        self.features: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.batches: list[list[int]] = []
        self._train_backprop = eft.classifier.train_backprop

    def __call__(self, model, input_ids, label_index, pad_id, config, accelerator, **kwargs):
        assert isinstance(input_ids, list) and kwargs["epochs"] == 1
        lengths = [len(ids) for ids in input_ids]
        sampler = LengthGroupedBatchSampler(lengths, config.batch_size, config.seed)
        self.batches = sampler.batches(0)  # the order train_backprop's sampler yields

        def sink(features, labels) -> None:
            self.features.append(features.cpu().numpy())
            self.labels.append(labels.cpu().numpy())

        kwargs["feature_sink"] = sink
        return self._train_backprop(
            model, input_ids, label_index, pad_id, config, accelerator, **kwargs
        )


def _score(truth: Sequence[Any], predicted: Sequence[Any], metric: str) -> float:
    return classification_scores(list(truth), list(predicted))[metric]


def write_summary() -> str:
    """``results/fused_k1_summary.md``: every committed run's test score of each kind of
    statistics minus the non-fused head's, with the validation-chosen and the default head."""
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("fused_k1_*.json"))]
    runs = [r for r in runs if "variants" in r]
    if not runs:
        raise SystemExit("no results/fused_k1_*.json yet: run a dataset first")
    names = [n for n in runs[0]["variants"] if n != "eval"]
    rows, chosen, default = [], {n: [] for n in names}, {n: [] for n in names}
    for run in runs:
        v = run["variants"]
        cells = [f"{run['dataset']} (seed {run['seed']})", f"{v['eval']['test']:.2f}"]
        for n in names:
            chosen[n].append(v[n]["test"] - v["eval"]["test"])
            default[n].append(v[n]["default_head_test"] - v["eval"]["default_head_test"])
            cells.append(f"{chosen[n][-1]:+.2f} / {default[n][-1]:+.2f}")
        rows.append(cells)
    rows.append(
        ["mean", ""] + [f"{np.mean(chosen[n]):+.2f} / {np.mean(default[n]):+.2f}" for n in names]
    )
    passes = {n: runs[0]["variants"][n]["pass_fraction"] for n in names}
    text = "\n".join(
        [
            "# Fused statistics at k = 1: every committed run (`benchmarks/fused_k1.py`)",
            "",
            "Test score of each kind of statistics minus the non-fused head's (`eval`), in the "
            "dataset's metric (accuracy for AG News here): head chosen on validation / default "
            "head (n_hidden 1000, C 1). Share of the training set passed again: "
            + ", ".join(f"{n} {100 * f:.0f} %" for n, f in passes.items())
            + ". One BP epoch per run; machine and versions in each run's file.",
            "",
            markdown_table(["run", "eval (non-fused)", *names], rows),
        ]
    )
    (RESULTS_DIR / "fused_k1_summary.md").write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--summary", action="store_true", help="only write results/fused_k1_summary.md"
    )
    args = parser.parse_args(argv)
    if args.summary:
        print(write_summary())
        return 0
    if not args.dataset:
        parser.error("--dataset is required")
    metric = METRIC.get(args.dataset, "accuracy")
    scoring = "weighted_f1" if metric == "weighted_f1" else "accuracy"
    train, validation, test, options = load_dataset_splits(args)
    config = EFTConfig(
        model=args.model,
        method="bp",  # EFT's BP stage, keeping the linear head (no I-ELM fitted here)
        bp_epochs=1,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        progress=False,
    )
    recorder = _RecordingBP()
    eft.classifier.train_backprop = recorder
    try:
        clf = EFTClassifier(config).fit(list(train.texts), list(train.labels))
    finally:
        eft.classifier.train_backprop = recorder._train_backprop
    bp_seconds = clf.timings_["bp"]
    clock = time.perf_counter()
    eval_train = clf.features(list(train.texts))
    pass_seconds = time.perf_counter() - clock
    X_val = clf.features(list(validation.texts))
    X_test = clf.features(list(test.texts))
    y_train = np.asarray(train.labels)
    label_index = np.searchsorted(clf.classes_, y_train)

    # the recorded batches, back in the training set's order
    n_batches = len(recorder.batches)
    assert len(recorder.features) == n_batches, "one recorded feature batch per step"
    fused_train = np.empty_like(eval_train)
    position = np.empty(len(y_train), dtype=np.int64)  # batch number of every sample
    for b, (indices, feats, labels) in enumerate(
        zip(recorder.batches, recorder.features, recorder.labels, strict=True)
    ):
        if not np.array_equal(label_index[indices], labels):
            raise RuntimeError("recorded batch order does not match the sampler's")
        fused_train[indices] = feats
        position[indices] = b
    fraction = (position + 0.5) / n_batches  # where in the epoch each sample was seen

    cosine = np.sum(fused_train * eval_train, 1) / (
        np.linalg.norm(fused_train, axis=1) * np.linalg.norm(eval_train, axis=1)
    )
    tenth = np.minimum((fraction * 10).astype(int), 9)
    staleness = [float(cosine[tenth == t].mean()) for t in range(10)]

    variants: dict[str, dict[str, Any]] = {
        "eval": {"X": eval_train, "w": None, "pass_fraction": 1.0},
        "fused": {"X": fused_train, "w": None, "pass_fraction": 0.0},
        "fused_ramp": {"X": fused_train, "w": (position + 1) / n_batches, "pass_fraction": 0.0},
        "fused_last_half": {
            "X": fused_train,
            "w": (fraction >= 0.5).astype(np.float64),
            "pass_fraction": 0.0,
        },
    }
    for f in REFEED_FRACTIONS:
        tail = fraction >= 1 - f
        variants[f"refeed_{f:g}"] = {
            "X": np.where(tail[:, None], fused_train, eval_train),
            "w": None,
            "pass_fraction": float((~tail).mean()),
        }

    results: dict[str, Any] = {}
    reference_predictions = None
    for name, v in variants.items():
        X, w = v["X"], v["w"]
        keep = np.ones(len(y_train), bool) if w is None else w > 0
        X, y, w = X[keep], y_train[keep], None if w is None else w[keep]
        chunks = np.array_split(np.arange(len(y)), 8)
        batches = [(X[c], y[c]) if w is None else (X[c], y[c], w[c]) for c in chunks]
        found = sweep(
            batches,
            X_val,
            list(validation.labels),
            n_hidden=N_HIDDEN,
            C=C_VALUES,
            scoring=scoring,
            random_state=args.seed,
        )
        predicted = found.best_estimator.predict(X_test)
        default = IELMClassifier(n_hidden=1000, C=1.0, random_state=args.seed)
        default.fit(X, y, sample_weight=w)
        best_row = max(found.table, key=lambda r: (r[scoring], -r["n_hidden"], -r["C"]))
        record = {
            "pass_fraction": v["pass_fraction"],
            "samples": int(len(y)),
            **found.best_params,
            "validation": 100 * best_row[scoring],
            "test": _score(test.labels, predicted, metric),
            "default_head_test": _score(test.labels, default.predict(X_test), metric),
            "ielm_stage_epochs": (v["pass_fraction"] * pass_seconds) / bp_seconds,
        }
        if reference_predictions is None:
            reference_predictions = predicted
        else:
            boot = paired_bootstrap(list(test.labels), reference_predictions, predicted, metric)
            record["difference_vs_eval"] = boot["difference"]
            record["p_worse_vs_eval"] = boot["p_value_worse"]
        results[name] = record
        print(
            f"{name}: test {record['test']:.2f} (val {record['validation']:.2f}, nh "
            f"{record['n_hidden']}, C {record['C']:g}), default head "
            f"{record['default_head_test']:.2f}",
            flush=True,
        )

    payload: dict[str, Any] = {
        **run_header(args, args.dataset, metric, (train, validation, test), options),
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "grid": {"n_hidden": N_HIDDEN, "C": C_VALUES},
        "bp_epoch_seconds": bp_seconds,
        "feature_pass_seconds": pass_seconds,
        "cosine_train_vs_eval_by_tenth": staleness,
        "variants": results,
    }
    payload["machine"]["load_average_at_end"] = load_average()
    rows = [
        [
            name,
            f"{100 * r['pass_fraction']:.0f} %",
            round(r["ielm_stage_epochs"], 3),
            f"nh {r['n_hidden']}, C {r['C']:g}",
            round(r["validation"], 2),
            round(r["test"], 2),
            "" if "difference_vs_eval" not in r else f"{r['difference_vs_eval']:+.2f}",
            "" if "p_worse_vs_eval" not in r else round(r["p_worse_vs_eval"], 3),
            round(r["default_head_test"], 2),
        ]
        for name, r in results.items()
    ]
    lines = [
        f"# Fused statistics at k = 1 on {args.dataset} (`benchmarks/fused_k1.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- Sizes: {payload['sizes']}; metric: {metric} (test unless marked validation); one "
        f"BP epoch at lr {args.learning_rate:g}, seed {args.seed}: {bp_seconds:.1f} s; eval-mode "
        f"feature pass over the training set: {pass_seconds:.1f} s; head grid n_hidden "
        f"{N_HIDDEN} x C {C_VALUES}, chosen on validation",
        "- Cosine of train-mode (fused) to eval-mode feature, by tenth of the epoch: "
        + ", ".join(f"{c:.3f}" for c in staleness),
        "",
        markdown_table(
            [
                "statistics from",
                "feature pass over",
                "pass / BP epoch",
                "head (validation)",
                "validation",
                "test",
                "test vs eval",
                "p (worse than eval)",
                "default head test",
            ],
            rows,
        ),
    ]
    stem = f"fused_k1_{args.dataset}" + ("" if args.seed == 42 else f"_seed{args.seed}")
    write_results(stem, payload, "\n".join(lines))
    print("\n".join(lines[-len(rows) - 4 :]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
