"""Are EFT's predicted probabilities usable? Temperature scaling of the I-ELM outputs.

    python benchmarks/calibration.py [--datasets trec,sst2,meld] [--seed 42] [--name NAME]

For each dataset, on the same splits as ``eft bench`` (TREC: 10 % of train for validation):
EFT with its defaults (k = 1) fitted with validation data, so that ``temperature_`` is fitted
there (:mod:`eft.calibration`), and the same single BP epoch as standard fine-tuning
(``method="bp"``, its default rate), whose softmax users know. On the test split: accuracy,
negative log-likelihood, expected calibration error (15 bins), Brier score and mean
confidence of the plain softmax of each model's outputs (temperature 1) and of the
temperature-scaled one (T fitted on the validation split, as ``eft train`` does).

Writes ``results/calibration_<name>.json`` and ``.md`` (name: the datasets joined by "_").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    data_root,
    load_average,
    machine_info,
    machine_markdown,
    markdown_table,
    write_results,
)

from eft import EFTClassifier, EFTConfig  # noqa: E402
from eft.benchmark import load_splits  # noqa: E402
from eft.calibration import (  # noqa: E402
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def quality(scores: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """Test-set quality of ``softmax(scores / temperature)``."""
    proba = softmax(scores / temperature, axis=1)
    one_hot = np.eye(scores.shape[1])[labels]
    return {
        "temperature": temperature,
        "accuracy": float((proba.argmax(1) == labels).mean()),
        "nll": negative_log_likelihood(scores, labels, temperature),
        "ece": expected_calibration_error(proba, labels),
        "brier": float(((proba - one_hot) ** 2).sum(1).mean()),
        "mean_confidence": float(proba.max(1).mean()),
    }


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    train, validation, test, options = load_splits(name, args.data_dir or data_root())
    results = {}
    for method in ("eft", "bp"):
        config = EFTConfig(
            method=method, bp_epochs=1, seed=args.seed, max_length=args.max_length, progress=False
        )
        clf = EFTClassifier(config).fit(
            list(train.texts), list(train.labels), list(validation.texts), list(validation.labels)
        )
        val_index, test_index = (
            np.searchsorted(clf.classes_, s.labels) for s in (validation, test)
        )
        temperature = fit_temperature(clf._class_scores(list(validation.texts)), val_index)
        if method == "eft":
            assert temperature == clf.temperature_  # what eft train fitted and saves
        scores = clf._class_scores(list(test.texts))  # every class, also for two
        results[method] = {
            "train_seconds": clf.timings_["train"],
            "plain": quality(scores, test_index, 1.0),
            "scaled": quality(scores, test_index, temperature),
        }
        print(name, method, results[method], flush=True)
    sizes = {"train": len(train), "validation": len(validation), "test": len(test)}
    return {"dataset_options": options, "sizes": sizes, "methods": results}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="trec,sst2,meld")
    parser.add_argument("--data-dir", help="root of the datasets (default: $EFT_DATA_DIR)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--name", help="results name (default: the datasets joined by _)")
    args = parser.parse_args(argv)
    machine = machine_info()  # before the runs: the load average at the start
    names = args.datasets.split(",")
    runs = {name: run_dataset(name, args) for name in names}
    payload = {
        "datasets": names,
        "model": "all-MiniLM-L6-v2 (embedded)",
        "seed": args.seed,
        "max_length": args.max_length,
        "machine": machine,
        "runs": runs,
    }
    payload["machine"]["load_average_at_end"] = load_average()
    rows = []
    for name, run in runs.items():
        for method, label in (("eft", "EFT (k = 1, I-ELM)"), ("bp", "fine-tuning, 1 epoch")):
            for kind in ("plain", "scaled"):
                q = run["methods"][method][kind]
                rows.append(
                    [
                        name,
                        label,
                        "softmax" if kind == "plain" else f"T = {q['temperature']:.3g}",
                        100 * q["accuracy"],
                        q["nll"],
                        100 * q["ece"],
                        q["brier"],
                        q["mean_confidence"],
                    ]
                )
    lines = [
        "# Calibration of the predicted probabilities (`benchmarks/calibration.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- seed {args.seed}, {args.max_length} tokens, embedded encoder; splits as `eft bench`; "
        "T fitted on the validation split (minimum NLL), scores on the test split",
        "",
        markdown_table(
            ["dataset", "model", "scores", "accuracy", "NLL", "ECE (%)", "Brier", "confidence"],
            rows,
        ),
    ]
    write_results(f"calibration_{args.name or '_'.join(names)}", payload, "\n".join(lines))
    print("\n".join(lines[-len(rows) - 2 :]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
