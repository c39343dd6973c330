"""Is the ONNX export right, and how fast does it serve? (``eft export`` / ``eft.export_onnx``)

    python benchmarks/onnx_export.py [--dataset trec] [--max-train 1000] [--repeats 3]

Fits EFT (k = 1, defaults) on ``--max-train`` training texts with the embedded encoder and
exports it twice: as traced (float32) and with ``quantize="int8"``. On the test texts it
compares each file run by onnxruntime with the PyTorch model (the largest differences of the
scores and probabilities, the share of the same predictions) and scores its accuracy. Then it
times prediction on the test texts, alternating PyTorch (``predict_proba``, eft's
length-sorted batches) and the two files in onnxruntime (the same batches, tokenized the same
way), ``repeats`` times each, single-process, on this machine's threads.

Writes ``results/onnx_export_<dataset>[_<tag>].json`` and ``.md``; ``--max-train 0`` trains
on the whole training split.
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
from eft.export import compare_with_model, onnx_outputs  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tag", help="appended to the results' name (another size, say)")
    parser.set_defaults(dataset="trec", max_train=1000)
    args = parser.parse_args(argv)
    train, validation, test, options = load_dataset_splits(args)
    header = run_header(args, args.dataset, "seconds", (train, validation, test), options)
    config = EFTConfig(model=args.model, max_length=args.max_length, seed=args.seed, progress=False)
    clf = EFTClassifier(config).fit(
        list(train.texts), list(train.labels), list(validation.texts), list(validation.labels)
    )
    texts, truth = list(test.texts), np.asarray(test.labels)
    classes = np.asarray(clf.classes_)
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        sessions = {}
        for name, quantize in (("float32", None), ("int8", "int8")):
            start = time.perf_counter()
            path = export_onnx(clf, Path(folder) / f"{name}.onnx", quantize=quantize)
            export_seconds = time.perf_counter() - start
            sessions[name] = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
            scores, probabilities = onnx_outputs(sessions[name], clf, texts)  # check_onnx's run
            files[name] = {
                "export_seconds": export_seconds,
                "file_megabytes": path.stat().st_size / 1e6,
                "check": compare_with_model(clf, texts, scores, probabilities),
            }
            accuracy = np.mean(classes[probabilities.argmax(1)] == truth)
            files[name]["test_accuracy"] = 100 * float(accuracy)
        runs = {
            "pytorch": lambda: clf.predict_proba(texts),
            **{
                f"onnxruntime {name}": lambda session=session: onnx_outputs(session, clf, texts)
                for name, session in sessions.items()
            },
        }
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
                print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    payload = {
        **header,
        "test_accuracy": 100 * float(np.mean(clf.predict(texts) == truth)),
        "files": files,
        "onnxruntime_version": onnxruntime.__version__,
        "predict_seconds": seconds,
        "median_predict_seconds": median,
        "speedup_over_pytorch": {
            name: median["pytorch"] / median[name] for name in median if name != "pytorch"
        },
    }
    payload["machine"]["load_average_at_end"] = load_average()
    lines = [
        f"# ONNX export of EFT on {args.dataset} (`benchmarks/onnx_export.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- EFT k = 1 (defaults) on {len(train)} training texts, embedded encoder, "
        f"{args.max_length} tokens; {len(texts)} test texts; onnxruntime "
        f"{onnxruntime.__version__}",
        "- float32: the graph as traced; int8: `--quantize int8` (dynamic quantization of the "
        "matrix products' weights, a scale per output channel)",
        "",
        markdown_table(
            [
                "model",
                "test accuracy (%)",
                "same predictions as PyTorch (%)",
                "largest probability difference",
                "file (MB)",
                "export (s)",
            ],
            [["PyTorch (eft)", payload["test_accuracy"], 100.0, 0.0, "", ""]]
            + [
                [
                    f"ONNX {name}",
                    info["test_accuracy"],
                    100 * info["check"]["same_predictions"],
                    f"{info['check']['max_abs_probability_difference']:.2g}",
                    info["file_megabytes"],
                    info["export_seconds"],
                ]
                for name, info in files.items()
            ],
        ),
        "",
        markdown_table(
            ["predict_proba on the test texts", "seconds per pass", "median", "speed-up"],
            [
                [
                    name,
                    ", ".join(f"{s:.2f}" for s in seconds[name]),
                    median[name],
                    f"{median['pytorch'] / median[name]:.2f}x",
                ]
                for name in seconds
            ],
        ),
    ]
    name = f"onnx_export_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    write_results(name, payload, "\n".join(lines))
    print("\n".join(lines[-12:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
