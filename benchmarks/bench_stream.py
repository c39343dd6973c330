"""Peak memory of the I-ELM stage when streaming 100,000 and 1,000,000 feature rows.

    python benchmarks/bench_stream.py [--rows 100000,1000000] [--n-hidden 1000]

Synthetic 384-dimensional float32 features (the width of all-MiniLM-L6-v2), 10 classes, are
made batch by batch (4,096 rows) from a seeded generator and streamed into
``IELMClassifier.fit_batches``, so no more than one batch of features exists at a time. Each
size runs in a fresh subprocess and reports its peak RSS (``VmHWM``), once with the default
glibc allocator and once with ``MALLOC_MMAP_THRESHOLD_=131072``, which stops glibc from serving
the per-batch buffers from a fragmenting heap (see ``bench_ielm.md``). Goal: the peak grows by
less than 10 % from the smallest to the largest N. Results: ``results/bench_stream.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import machine_info, machine_markdown, markdown_table, peak_rss_mb, write_results  # noqa: E402

BATCH = 4096
WIDTH = 384
CLASSES = 10


CENTRES = torch.randn(CLASSES, WIDTH, generator=torch.Generator().manual_seed(0)) * 3 / WIDTH**0.5


def batches(rows: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Class centre plus Gaussian noise; ``seed`` draws the labels and the noise."""
    generator = torch.Generator().manual_seed(seed)
    centres = CENTRES
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        labels = torch.randint(0, CLASSES, (n,), generator=generator)
        yield centres[labels] + torch.randn(n, WIDTH, generator=generator) / WIDTH**0.5, labels


def child(rows: int, n_hidden: int) -> dict:
    from eft import IELMClassifier

    before = peak_rss_mb()
    start = time.perf_counter()
    head = IELMClassifier(n_hidden=n_hidden, random_state=0)
    head.fit_batches(lambda: batches(rows), classes=list(range(CLASSES)))
    seconds = time.perf_counter() - start
    X, y = next(batches(BATCH, seed=1))
    return {
        "rows": rows,
        "peak_rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": seconds,
        "n_samples_seen": head.n_samples_seen_,
        "held_out_accuracy": float((head.predict(X) == y.numpy()).mean()),
    }


def run_child(rows: int, n_hidden: int, fixed_threshold: bool) -> dict:
    env = dict(os.environ)
    if fixed_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    command = [sys.executable, __file__, "--child", str(rows), "--n-hidden", str(n_hidden)]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["allocator"] = "fixed mmap threshold" if fixed_threshold else "default"
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--n-hidden", type=int, default=1000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n_hidden)))
        return 0
    machine = machine_info()  # before the runs: the load average at the start
    sizes = [int(r) for r in args.rows.split(",")]
    runs = [run_child(n, args.n_hidden, fixed) for fixed in (False, True) for n in sizes]
    growth = {}
    for allocator in ("default", "fixed mmap threshold"):
        peaks = [r["peak_rss_mb"] for r in runs if r["allocator"] == allocator]
        growth[allocator] = peaks[-1] / peaks[0] - 1
    payload = {
        "benchmark": "bench_stream",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "n_hidden": args.n_hidden,
        "width": WIDTH,
        "batch": BATCH,
        "runs": runs,
        "peak_growth": growth,
    }
    table = markdown_table(
        ["allocator", "rows", "peak RSS before MiB", "peak RSS MiB", "seconds", "accuracy"],
        [
            [
                r["allocator"],
                r["rows"],
                r["peak_rss_before_mb"],
                r["peak_rss_mb"],
                r["seconds"],
                r["held_out_accuracy"],
            ]
            for r in runs
        ],
    )
    lines = [
        "# Streaming the I-ELM stage: peak memory against N (`benchmarks/bench_stream.py`)",
        "",
        machine_markdown(payload["machine"]),
        "",
        f"- {WIDTH}-dim float32 features, batches of {BATCH}, n_hidden {args.n_hidden}, "
        f"`IELMClassifier.fit_batches`; one fresh subprocess per row.",
        "",
        table,
        "",
        *(
            f"Peak RSS growth from {sizes[0]:,} to {sizes[-1]:,} rows, {k} allocator: "
            f"{100 * v:+.1f} % (goal < 10 %)."
            for k, v in growth.items()
        ),
    ]
    write_results("bench_stream", payload, "\n".join(lines))
    print("\n".join(lines[-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
