"""Side-by-side benchmark: standard fine-tuning against EFT, in ONE run on one machine.

    python benchmarks/bench_eft.py --dataset trec [--k 1 --n-hidden 1000 --C 1] [--tune]
        [--max-train N] [--max-validation N] [--max-test N] [--max-length 128] [--model M]

The same as ``eft bench`` (see :mod:`eft.benchmark` for the methods and outputs), except that
the results go to this repository's ``benchmarks/results/`` whatever the working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import RESULTS_DIR  # noqa: E402

from eft.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(output_dir=RESULTS_DIR))
