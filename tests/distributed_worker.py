"""Run by tests/test_distributed.py under torchrun (or alone): fit EFT and dump the head."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eft import Callback, EFTClassifier, EFTConfig  # noqa: E402
from tests.test_classifier import LABELS, TEXTS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-texts", type=int, default=len(TEXTS))
    parser.add_argument("--bp-epochs", type=int, default=0)
    parser.add_argument("--n-iter", type=int, default=1)
    parser.add_argument("--fused-fraction", type=float, help="fused mode with this fraction")
    parser.add_argument("--stream", help="train with fit_stream on this file")
    parser.add_argument("--chunk-rows", type=int, default=10)
    parser.add_argument("--pairs", action="store_true", help="(text, reversed text) pairs")
    parser.add_argument("--multi-label", action="store_true", help="label sets: + 'long'")
    parser.add_argument("--label-separator", help="--stream: a multi-label file")
    parser.add_argument("--stop-on-rank", type=int, help="a callback stops BP there, epoch 1")
    parser.add_argument("--standardize", action="store_true", help="a standardised head")
    args = parser.parse_args()
    texts, labels = TEXTS[: args.n_texts], LABELS[: args.n_texts]
    if args.pairs:
        texts = [(text, " ".join(reversed(text.split()))) for text in texts]
    if args.multi_label:
        long = [len(text.split()) > 3 for text in texts]
        labels = [[y, "long"] if is_long else [y] for y, is_long in zip(labels, long, strict=True)]
    config = EFTConfig(
        model=args.model,
        bp_epochs=args.bp_epochs,
        n_hidden=40,
        batch_size=4,
        n_iter=args.n_iter,
        learning_rate=5e-4,
        elm_from_last_epoch=args.fused_fraction is not None,
        fused_fraction=args.fused_fraction or 1.0,
        device="cpu",
        progress=False,
        standardize=args.standardize,
    )
    callbacks = [StopOnRank(args.stop_on_rank)] if args.stop_on_rank is not None else []
    rates = LearningRates()
    callbacks.append(rates)
    if args.stream:
        clf = EFTClassifier(config).fit_stream(
            args.stream,
            chunk_rows=args.chunk_rows,
            callbacks=callbacks,
            label_separator=args.label_separator,
        )
    else:
        clf = EFTClassifier(config).fit(texts, labels, callbacks=callbacks)
    if clf.is_main_process_:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        clf.head_.save(out / "head.safetensors")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        (out / "result.json").write_text(
            json.dumps(
                {
                    "world_size": world,
                    "predictions": clf.predict(texts).tolist(),
                    "n_samples_seen": clf.head_.n_samples_seen_,
                    "text_pairs": clf.text_pairs_,
                    "multi_label": clf.multi_label_,
                    "timings": clf.timings_,
                    "bp_epochs_run": len(clf.history_.get("bp_train_loss", [])),
                    "bp_stopped_by_callback": clf.history_.get("bp_stopped_by_callback"),
                    "learning_rate_after_epochs": rates.after_epochs,
                }
            )
        )
    # As the README asks of torchrun scripts: a gloo rank that exits with its group open can
    # abort at interpreter shutdown (SIGABRT; it failed CI runs).
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    # ... and the group must really end: a reference left to it keeps gloo's threads running
    # into shutdown (eft.backprop imports torch.distributed.nn early for this). A freed
    # group's threads may take a moment to exit (one make test saw gloo_tcp_loop still there
    # right after destroy_process_group), so allow 2 s before calling them left running.
    deadline = time.monotonic() + 2.0
    while (left := gloo_threads()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        sys.exit(f"gloo threads still running 2 s after destroy_process_group: {left}")


class LearningRates(Callback):
    """The BP stage's learning rate after every epoch, read from its scheduler."""

    def __init__(self) -> None:
        import eft.backprop

        self.after_epochs: list[float] = []
        self.scheduler = None
        make = eft.backprop._schedule

        def keep(*args, **kwargs):
            self.scheduler = make(*args, **kwargs)
            return self.scheduler

        eft.backprop._schedule = keep

    def on_epoch_end(self, log, model) -> bool:
        self.after_epochs.append(float(self.scheduler.get_last_lr()[0]))
        return False


class StopOnRank(Callback):
    """Asks to stop the BP stage after its first epoch, on one rank only."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_epoch_end(self, log, model) -> bool:
        return int(os.environ.get("RANK", "0")) == self.rank


def gloo_threads() -> list[str]:
    """Names of this process's gloo threads (Linux; none found elsewhere)."""
    names = []
    for comm in Path("/proc/self/task").glob("*/comm"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            names.append(comm.read_text().strip())
    return sorted(name for name in names if "gloo" in name)


if __name__ == "__main__":
    main()
