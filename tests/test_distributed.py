"""EFT across processes: 2 ranks with the gloo backend give the single-process head."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eft.ielm import IELMClassifier

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], nproc: int, timeout: int = 600) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            str(WORKER),
            *args,
        ]
    else:
        command = [sys.executable, str(WORKER), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _same_head(tmp_path: Path, n_texts: int) -> list[dict]:
    """Asserts that the "single" and "ddp" runs' heads saw every text once and hold the same
    statistics (to float32 summation order); returns the two runs' result.json."""
    single = IELMClassifier.load(tmp_path / "single" / "head.safetensors")
    ddp = IELMClassifier.load(tmp_path / "ddp" / "head.safetensors")
    assert ddp.n_samples_seen_ == single.n_samples_seen_ == n_texts
    for name in ("gamma_", "lambda_", "output_weights_", "mean_", "scale_"):
        if getattr(single, name) is None:  # not standardised
            assert getattr(ddp, name) is None
            continue
        a, b = getattr(single, name).numpy(), getattr(ddp, name).numpy()
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max(), name
    return [json.loads((tmp_path / d / "result.json").read_text()) for d in ("single", "ddp")]


@pytest.mark.parametrize(  # 33 does not divide evenly by 2 ranks
    ("n_texts", "standardize"), [(64, False), (33, False), (33, True)]
)
def test_two_ranks_give_the_single_process_head(tiny_bert_dir, tmp_path, n_texts, standardize):
    """Standardised: the mean and scale of every rank's features, summed across the ranks."""
    common = ["--model", str(tiny_bert_dir), "--n-texts", str(n_texts)]
    common += ["--standardize"] if standardize else []
    _run([*common, "--out", str(tmp_path / "single")], nproc=1)
    _run([*common, "--out", str(tmp_path / "ddp")], nproc=2)
    results = _same_head(tmp_path, n_texts)
    assert results[1]["world_size"] == 2
    assert results[0]["predictions"] == results[1]["predictions"]


@pytest.mark.parametrize("kind", ["single", "pairs", "multi-label"])
def test_two_ranks_with_backprop_and_iterations_run(tiny_bert_dir, tmp_path, kind):
    """DDP BP epoch + Eq. 8-9 iterations with all-reduced statistics complete on 2 ranks
    (with text pairs too: the segment ids are derived on each rank; and with label sets: 0/1
    label rows in the batches and the head's statistics)."""
    args = ["--model", str(tiny_bert_dir), "--n-texts", "33", "--n-iter", "2"]
    option = ["--bp-epochs", "2"] if kind == "single" else ["--bp-epochs", "1", f"--{kind}"]
    _run([*args, *option, "--out", str(tmp_path / "ddp")], nproc=2)
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    if kind == "single":  # 9 batches on 2 ranks take 5 steps each: the linear schedule spans
        # 10 steps an epoch (it was 9, so the rate was 2.2e-4 after the first of two epochs)
        assert result["learning_rate_after_epochs"] == [pytest.approx(2.5e-4), 0.0]
    assert result["n_samples_seen"] >= 33 and len(result["predictions"]) == 33
    assert result["text_pairs"] is (kind == "pairs")
    assert result["multi_label"] is (kind == "multi-label")
    if kind == "multi-label":  # a 0/1 row per text, two labels plus "long"
        assert np.asarray(result["predictions"]).shape == (33, 3)


def test_two_ranks_in_fused_mode_with_a_feature_pass_see_every_text(tiny_bert_dir, tmp_path):
    """fused_fraction 0.5 on 2 ranks: each rank passes the texts of its own first steps."""
    args = ["--model", str(tiny_bert_dir), "--n-texts", "33", "--bp-epochs", "1"]
    _run([*args, "--fused-fraction", "0.5", "--out", str(tmp_path / "ddp")], nproc=2)
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    # 33 texts in batches of 4 per rank: Accelerate repeats a few to even out the last step
    assert 33 <= result["n_samples_seen"] <= 33 + 4
    assert result["timings"]["feedforward"] > 0


def test_two_ranks_streaming_a_file_give_the_single_process_head(tiny_bert_dir, tmp_path):
    """fit_stream under torchrun: rows g % 2 per rank, chunks of 10 rows, 33 rows in all."""
    from tests.test_classifier import LABELS, TEXTS

    stream = tmp_path / "train.jsonl"
    stream.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n"
            for t, y in zip(TEXTS[:33], LABELS[:33], strict=True)
        )
    )
    common = ["--model", str(tiny_bert_dir), "--n-texts", "33"]
    _run([*common, "--out", str(tmp_path / "single")], nproc=1)
    _run([*common, "--stream", str(stream), "--out", str(tmp_path / "ddp")], nproc=2)
    results = _same_head(tmp_path, 33)
    assert results[0]["predictions"] == results[1]["predictions"]
    # streamed DDP BP epochs: the ranks' shares of a 3-row chunk differ, the steps may not;
    # the linear schedule reaches 0 at the end of the last epoch, not halfway (it stepped
    # once per rank for each of one rank's steps)
    args = [*common, "--stream", str(stream), "--bp-epochs", "2", "--out", str(tmp_path / "bp")]
    _run(args, nproc=2)
    result = json.loads((tmp_path / "bp" / "result.json").read_text())
    assert len(result["predictions"]) == 33
    assert result["learning_rate_after_epochs"] == [pytest.approx(2.5e-4), 0.0]


def test_two_ranks_streaming_label_sets_give_the_single_process_head(tiny_bert_dir, tmp_path):
    """A multi-label file streamed on 2 ranks: 0/1 label rows in every rank's statistics."""
    from tests.test_classifier import LABELS, TEXTS

    stream = tmp_path / "tags.jsonl"
    with stream.open("w") as handle:
        for text, label in zip(TEXTS[:33], LABELS[:33], strict=True):
            labels = [label, "long"] if len(text.split()) > 3 else [label]  # as the worker's
            handle.write(json.dumps({"text": text, "label": labels}) + "\n")
    common = ["--model", str(tiny_bert_dir), "--n-texts", "33"]
    _run([*common, "--multi-label", "--out", str(tmp_path / "single")], nproc=1)
    streamed = ["--stream", str(stream), "--label-separator", ","]
    _run([*common, *streamed, "--out", str(tmp_path / "ddp")], nproc=2)
    results = _same_head(tmp_path, 33)
    assert results[1]["multi_label"] and results[0]["predictions"] == results[1]["predictions"]
    # and a DDP BP epoch on the streamed label sets
    _run([*common, *streamed, "--bp-epochs", "1", "--out", str(tmp_path / "bp")], nproc=2)
    assert np.asarray(
        json.loads((tmp_path / "bp" / "result.json").read_text())["predictions"]
    ).shape == (33, 3)


def test_a_callback_on_one_rank_stops_the_bp_stage_on_every_rank(tiny_bert_dir, tmp_path):
    """Rank 1 asks to stop after epoch 1 of 3; rank 0 (whose result is written) stops too.
    A rank that trained on alone would wait for its partner's gradients: the timeout."""
    args = ["--model", str(tiny_bert_dir), "--n-texts", "33", "--bp-epochs", "3"]
    _run([*args, "--stop-on-rank", "1", "--out", str(tmp_path / "ddp")], nproc=2, timeout=300)
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["bp_epochs_run"] == 1 and result["bp_stopped_by_callback"] is True
    assert result["n_samples_seen"] >= 33 and result["timings"]["feedforward"] > 0


def test_cpu_ranks_wait_for_each_other_on_the_cpu(monkeypatch):
    """On a GPU machine accelerate's barrier ran the CPU ranks' gloo barrier on cuda:<rank>
    (seen failing on an H200 with 2 ranks); CPU ranks use a plain barrier, GPU ranks accelerate's.
    """
    from types import SimpleNamespace

    import torch

    from eft.backprop import wait_for_everyone

    calls = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda **kw: calls.append(("torch", kw)))

    def accelerator(device: str, processes: int) -> SimpleNamespace:
        return SimpleNamespace(
            num_processes=processes,
            device=torch.device(device),
            wait_for_everyone=lambda: calls.append(("accelerate", {})),
        )

    wait_for_everyone(accelerator("cpu", 2))
    wait_for_everyone(accelerator("cuda", 2))
    wait_for_everyone(accelerator("cpu", 1))
    assert calls == [("torch", {}), ("accelerate", {}), ("accelerate", {})]
