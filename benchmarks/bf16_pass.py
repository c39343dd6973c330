"""Is the bf16 feature pass faster than float32 on this CPU? (``inference_precision``)

    python benchmarks/bf16_pass.py [--dataset imdb] [--max-train 2000] [--max-length 128]
        [--repeats 2] [--name NAME]

Times EFT's eval-mode feature pass (steps 6-7 of Algorithm 1) over the training texts with
the embedded pretrained encoder, alternating float32 and bf16 autocast, ``repeats`` times
each. Whether bf16 pays off depends on the CPU's bf16 kernels, not only on its AVX512-BF16
flag: run this before choosing ``--inference-precision bf16``.

Writes ``results/bf16_pass_<name>.json`` and ``.md`` (name: the dataset unless given).
"""

from __future__ import annotations

import argparse
import statistics
import sys
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

PRECISIONS = ("no", "bf16")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--name", help="results name (default: the dataset)")
    # only the training texts are passed; one validation and test text keep the loader simple
    parser.set_defaults(dataset="imdb", max_train=2000, max_validation=1, max_test=1)
    args = parser.parse_args(argv)
    train, validation, test, options = load_dataset_splits(args)
    texts, labels = list(train.texts), list(train.labels)
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            config = EFTConfig(
                model=args.model,
                bp_epochs=0,
                max_length=args.max_length,
                mixed_precision="no",
                inference_precision=precision,
                seed=args.seed,
                progress=False,
            )
            clf = EFTClassifier(config).fit(texts[::20], labels[::20])
            start = time.perf_counter()
            clf.features(texts)
            seconds[precision].append(time.perf_counter() - start)
            print(f"{precision}: {seconds[precision][-1]:.1f} s", flush=True)
    median = {p: statistics.median(s) for p, s in seconds.items()}
    payload = {
        **run_header(args, args.dataset, "seconds", (train, validation, test), options),
        "texts": len(texts),
        "seconds": seconds,
        "median_seconds": median,
        "bf16_speedup": median["no"] / median["bf16"],
    }
    payload["machine"]["load_average_at_end"] = load_average()
    lines = [
        f"# bf16 against float32 feature pass on {args.dataset} (`benchmarks/bf16_pass.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- {len(texts)} training texts, {args.max_length} tokens, embedded encoder (k = 0)",
        "",
        markdown_table(
            ["inference precision", "seconds per pass", "median"],
            [[p, ", ".join(f"{s:.1f}" for s in seconds[p]), median[p]] for p in PRECISIONS],
        ),
        "",
        f"bf16 speed-up over float32: {payload['bf16_speedup']:.2f}x "
        "(below 1: bf16 is slower on this CPU).",
    ]
    write_results(f"bf16_pass_{args.name or args.dataset}", payload, "\n".join(lines))
    print("\n".join(lines[-4:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
