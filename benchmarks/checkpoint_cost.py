"""Does saving a checkpoint after every BP epoch slow the epochs that are timed?

    python benchmarks/checkpoint_cost.py [--dataset trec] [--epochs 3] [--repeats 2]
        [--max-train N] [--name NAME]

``eft bench`` and ``eft experiment`` now save each fit's encoder, AdamW moments and record
after every BP epoch (so that an interrupted run continues); the save itself is outside the
timed epochs, but its disk writes could slow the next epoch. This trains the fine-tuning
baseline (``method="bp"``) for ``epochs`` epochs, alternating without and with checkpoints,
``repeats`` times each, and reports the timed BP seconds, the whole fit's wall time and the
ratios with / without, and the median difference per epoch in seconds (a small ``--max-train``
makes a fixed cost per epoch stand out).

Writes ``results/checkpoint_cost_<name>.json`` and ``.md`` (name: the dataset unless given).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    load_average,
    load_dataset_splits,
    machine_markdown,
    markdown_table,
    write_results,
)

from eft import EFTClassifier, EFTConfig  # noqa: E402
from eft.benchmark import add_data_arguments, run_header  # noqa: E402

MODES = ("no checkpoint", "checkpoint every epoch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--name", help="results name (default: the dataset)")
    parser.set_defaults(dataset="trec", max_validation=1, max_test=1)
    args = parser.parse_args(argv)
    train, validation, test, options = load_dataset_splits(args)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            folder = Path(tempfile.mkdtemp(prefix="eft-ckpt-")) if mode != MODES[0] else None
            config = EFTConfig(
                model=args.model,
                method="bp",
                bp_epochs=args.epochs,
                max_length=args.max_length,
                seed=args.seed,
                progress=False,
                checkpoint_dir=None if folder is None else str(folder / "checkpoint"),
            )
            start = time.perf_counter()
            clf = EFTClassifier(config).fit(list(train.texts), list(train.labels))
            wall = time.perf_counter() - start
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            epochs = clf.history_["bp_epoch_seconds"]
            runs[mode].append({"bp_seconds": sum(epochs), "epoch_seconds": epochs, "wall": wall})
            print(f"{mode}: BP {sum(epochs):.1f} s, fit wall {wall:.1f} s", flush=True)
    median = {
        mode: {key: statistics.median(r[key] for r in runs[mode]) for key in ("bp_seconds", "wall")}
        for mode in MODES
    }
    ratio = {key: median[MODES[1]][key] / median[MODES[0]][key] for key in ("bp_seconds", "wall")}
    per_epoch = {
        key: (median[MODES[1]][key] - median[MODES[0]][key]) / args.epochs
        for key in ("bp_seconds", "wall")
    }
    payload = {
        **run_header(args, args.dataset, "seconds", (train, validation, test), options),
        "epochs": args.epochs,
        "runs": runs,
        "median": median,
        "ratio_checkpoint_to_none": ratio,
        "extra_seconds_per_epoch": per_epoch,
    }
    payload["machine"]["load_average_at_end"] = load_average()
    lines = [
        f"# Checkpoint after every BP epoch: its cost on {args.dataset} "
        "(`benchmarks/checkpoint_cost.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- Fine-tuning (method bp), {args.epochs} epochs on {len(train)} training texts, "
        f"{args.max_length} tokens, embedded encoder; modes alternated, {args.repeats} runs each",
        "",
        markdown_table(
            ["mode", "timed BP seconds per run", "fit wall seconds per run"],
            [
                [
                    mode,
                    ", ".join(f"{r['bp_seconds']:.1f}" for r in runs[mode]),
                    ", ".join(f"{r['wall']:.1f}" for r in runs[mode]),
                ]
                for mode in MODES
            ],
        ),
        "",
        f"Median ratio with / without checkpoints: timed BP {ratio['bp_seconds']:.3f}, "
        f"fit wall {ratio['wall']:.3f} (the wall time includes the saves); median difference "
        f"per epoch: timed BP {per_epoch['bp_seconds']:+.2f} s, fit wall "
        f"{per_epoch['wall']:+.2f} s.",
    ]
    write_results(f"checkpoint_cost_{args.name or args.dataset}", payload, "\n".join(lines))
    print("\n".join(lines[-3:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
