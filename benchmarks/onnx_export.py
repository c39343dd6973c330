"""Is the ONNX export right, and how fast does it serve? (``eft export`` / ``eft.export_onnx``)

    python benchmarks/onnx_export.py [--dataset trec] [--max-train 1000] [--repeats 3]

Fits EFT (k = 1, defaults) on ``--max-train`` training texts with the embedded encoder and
exports it. On the test texts it compares the file run by onnxruntime with the PyTorch model:
the largest differences of the scores and probabilities, and the share of the same predictions.
Then it times prediction on the test texts, alternating PyTorch (``predict_proba``, eft's
length-sorted batches) and onnxruntime (the same batches, tokenized the same way), ``repeats``
times each, single-process, on this machine's threads.

Writes ``results/onnx_export_<dataset>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    load_average,
    load_dataset_splits,
    machine_markdown,
    markdown_table,
    write_results,
)

from eft import EFTClassifier, EFTConfig, export_onnx  # noqa: E402
from eft.benchmark import add_data_arguments, run_header  # noqa: E402
from eft.encoder import pad_batch, sorted_batches  # noqa: E402
from eft.export import check_onnx  # noqa: E402


def onnx_predict(session, clf: EFTClassifier, texts: list) -> np.ndarray:
    """The file's probabilities for ``texts``, in eft's length-sorted batches."""
    ids = clf._input_ids(texts)
    out = np.zeros((len(texts), len(clf.classes_)), dtype=np.float32)
    pad = int(clf.tokenizer_.pad_token_id)
    for rows in sorted_batches([len(i) for i in ids], clf.config.eval_batch_size):
        batch = pad_batch([ids[i] for i in rows], pad)
        out[rows] = session.run(["probabilities"], {k: v.numpy() for k, v in batch.items()})[0]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.set_defaults(dataset="trec", max_train=1000)
    args = parser.parse_args(argv)
    train, validation, test, options = load_dataset_splits(args)
    header = run_header(args, args.dataset, "seconds", (train, validation, test), options)
    config = EFTConfig(model=args.model, max_length=args.max_length, seed=args.seed, progress=False)
    clf = EFTClassifier(config).fit(
        list(train.texts), list(train.labels), list(validation.texts), list(validation.labels)
    )
    texts = list(test.texts)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = export_onnx(clf, Path(folder) / "model.onnx")
        export_seconds = time.perf_counter() - start
        megabytes = path.stat().st_size / 1e6
        check = check_onnx(clf, path, texts)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        seconds: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
        for _ in range(args.repeats):
            for name, run in (
                ("pytorch", lambda: clf.predict_proba(texts)),
                ("onnxruntime", lambda: onnx_predict(session, clf, texts)),
            ):
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
                print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    payload = {
        **header,
        "test_accuracy": 100 * float(np.mean(clf.predict(texts) == np.asarray(test.labels))),
        "export_seconds": export_seconds,
        "file_megabytes": megabytes,
        "check": check,
        "onnxruntime_version": onnxruntime.__version__,
        "predict_seconds": seconds,
        "median_predict_seconds": median,
        "onnxruntime_speedup": median["pytorch"] / median["onnxruntime"],
    }
    payload["machine"]["load_average_at_end"] = load_average()
    lines = [
        f"# ONNX export of EFT on {args.dataset} (`benchmarks/onnx_export.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- EFT k = 1 (defaults) on {len(train)} training texts, embedded encoder, "
        f"{args.max_length} tokens; test accuracy {payload['test_accuracy']:.2f} %; "
        f"onnxruntime {onnxruntime.__version__}",
        f"- Export: {export_seconds:.1f} s, one file of {megabytes:.1f} MB",
        f"- On the {check['texts']} test texts: {100 * check['same_predictions']:.2f} % the same "
        f"predictions; largest difference {check['max_abs_probability_difference']:.2g} in a "
        f"probability, {check['max_abs_score_difference']:.2g} in a score",
        "",
        markdown_table(
            ["predict_proba on the test texts", "seconds per pass", "median"],
            [[n, ", ".join(f"{s:.2f}" for s in seconds[n]), median[n]] for n in seconds],
        ),
        "",
        f"onnxruntime speed-up over PyTorch: {payload['onnxruntime_speedup']:.2f}x.",
    ]
    write_results(f"onnx_export_{args.dataset}", payload, "\n".join(lines))
    print("\n".join(lines[-8:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
