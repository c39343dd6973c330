"""GPU check of the code paths CI cannot run: bf16 feature pass, head on the GPU, NCCL.

Run on a machine with a CUDA GPU (under 5 minutes with the embedded MiniLM):

    python benchmarks/gpu_check.py [--data-dir ../shared/data] [--output benchmarks/results]

It checks, and writes ``gpu_check.json`` with the device, versions and timings:

1. ``IELMClassifier`` on CUDA tensors equals the CPU head (float64 statistics, solve on GPU);
2. ``EFTClassifier`` with ``device="cuda"``: one BP epoch in bf16 autocast, the feature pass in
   bf16, the head on the GPU, on 2,000 TREC questions; test accuracy and per-phase times;
3. the same fit inside a one-process NCCL group (the distributed code path, world size 1);
4. the model saved on the GPU loads on the CPU and predicts the same labels;
5. host synchronisations during a probe fit (feature pass + head): counted with
   ``torch.cuda.set_sync_debug_mode("warn")``, against the number of feature batches, with
   the file and line of each call (the goal is no round-trip per batch: per-batch checks
   and timers stay on the device). Moving the model to the GPU copies each weight once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch


def check_head() -> dict:
    from eft import IELMClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 384)).astype(np.float32)
    y = (X[:, :10].argmax(1)).astype(np.int64)
    cpu = IELMClassifier(n_hidden=2000, C=1.0, random_state=0).fit(X, y)
    torch.cuda.synchronize()
    start = time.perf_counter()
    gpu = IELMClassifier(n_hidden=2000, C=1.0, device="cuda", random_state=0)
    gpu.fit(torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda())
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    a, b = cpu.output_weights_.numpy(), gpu.output_weights_.cpu().numpy()
    relative = float(np.abs(a - b).max() / np.abs(a).max())
    agree = float((cpu.predict(X) == gpu.predict(torch.from_numpy(X).cuda())).mean())
    assert relative < 1e-4, relative
    return {"fit_seconds_gpu": seconds, "max_relative_difference": relative, "agreement": agree}


def check_pipeline(data_dir: str, output: Path) -> dict:
    from eft import EFTClassifier, EFTConfig, datasets

    trec = datasets.load("trec", data_dir=data_dir)
    train, test = trec.splits["train"], trec.splits["test"]
    texts, labels = list(train.texts)[:2000], list(train.labels)[:2000]
    config = EFTConfig(bp_epochs=1, device="cuda", mixed_precision="bf16", progress=False)
    clf = EFTClassifier(config).fit(texts, labels)
    accuracy = clf.score(list(test.texts), list(test.labels))
    saved = clf.save_pretrained(output / "gpu_check_model")
    on_cpu = EFTClassifier.from_pretrained(saved, device="cpu")
    same = float((on_cpu.predict(list(test.texts)) == clf.predict(list(test.texts))).mean())
    return {
        "test_accuracy": accuracy,
        "timings": clf.timings_,
        "head_device": str(clf.head_.gamma_.device),
        "cpu_gpu_prediction_agreement": same,
    }


def check_host_syncs(data_dir: str) -> dict:
    import warnings

    from eft import EFTClassifier, EFTConfig, datasets

    trec = datasets.load("trec", data_dir=data_dir)
    texts, labels = list(trec["train"].texts)[:2048], list(trec["train"].labels)[:2048]
    config = EFTConfig(bp_epochs=0, device="cuda", eval_batch_size=64, progress=False)
    EFTClassifier(config).fit(texts[:128], labels[:128])  # warm-up: load, allocate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            clf = EFTClassifier(config).fit(texts, labels)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
    # a warning raised from C++ carries the Python line that called the operation
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return {
        "feature_batches": len(texts) // 64,
        "host_syncs": len(syncs),
        "sync_sites": dict(sites.most_common()),
        "timings": clf.timings_,
    }


def check_distributed(data_dir: str) -> dict:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29555")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    dist.init_process_group("nccl")
    try:
        from eft import EFTClassifier, EFTConfig, datasets

        trec = datasets.load("trec", data_dir=data_dir)
        texts, labels = list(trec["train"].texts)[:1000], list(trec["train"].labels)[:1000]
        clf = EFTClassifier(EFTConfig(bp_epochs=0, device="cuda", progress=False))
        clf.fit(texts, labels)
        return {"world_size": dist.get_world_size(), "n_samples_seen": clf.head_.n_samples_seen_}
    finally:
        dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("EFT_DATA_DIR", "../shared/data"))
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA GPU here; nothing to check.", file=sys.stderr)
        return 1
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "head": check_head(),
        "pipeline": check_pipeline(args.data_dir, output),
        "host_syncs": check_host_syncs(args.data_dir),
        "distributed": check_distributed(args.data_dir),
    }
    (output / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
