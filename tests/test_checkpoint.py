"""Interruption: a run killed after a BP epoch resumes to the same model (eft.checkpoint)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eft import EFTClassifier, InputError
from eft.checkpoint import read_checkpoint
from tests.test_classifier import LABELS, TEXTS
from tests.test_cli import _write_csv, run_eft


def _slow_run(tmp_path, model_dir, epochs: int) -> tuple[list[str], Path]:
    """`eft train` arguments for a tiny model with 128 steps per epoch (about a second), so a
    test can act between epochs; returns the arguments and the training file."""
    rows = list(zip(TEXTS * 4, LABELS * 4, strict=True))  # 256 rows, batch 2
    train = _write_csv(tmp_path / "train.csv", rows)
    args = [
        "train",
        "--train",
        str(train),
        "--model",
        str(model_dir),
        "--bp-epochs",
        str(epochs),
        "--batch-size",
        "2",
        "--n-hidden",
        "32",
        "--learning-rate",
        "5e-4",
        "--device",
        "cpu",
        "--quiet",
    ]
    return args, train


def _start_and_wait_for_checkpoint(args: list[str], checkpoint: Path) -> subprocess.Popen:
    """Start `eft` and return once it has written its first checkpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eft.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell starts background jobs with SIGINT ignored, and children inherit that; let
        # the child see Ctrl-C as a terminal user's process does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while not (checkpoint / "checkpoint.json").is_file():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline
        time.sleep(0.01)
    return process


@pytest.mark.parametrize("method", ["eft", "bp", "multi-label"])
def test_killed_run_resumes_to_the_uninterrupted_model(method, tiny_bert_dir, tmp_path):
    common, train = _slow_run(tmp_path, tiny_bert_dir, epochs=3)
    if method == "multi-label":  # label sets "pos|long": the options come back with the run
        rows = list(zip(TEXTS * 4, LABELS * 4, strict=True))
        rows = [(t, f"{y}|long" if len(t.split()) > 3 else y) for t, y in rows]
        _write_csv(train, rows)
        common += ["--multi-label", "--label-separator", "|"]
    else:
        common += ["--method", method]
    if method == "bp":
        common += ["--validation", str(train), "--early-stopping-patience", "2"]
    whole = run_eft(*common, "--output", str(tmp_path / "whole"), "--no-checkpoint")
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    checkpoint = tmp_path / "killed.checkpoint"
    process = _start_and_wait_for_checkpoint([*common, "--output", str(out)], checkpoint)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = read_checkpoint(checkpoint)
    assert 1 <= state["epoch"] < 3, "the run must be killed between its first and last epoch"
    assert not out.exists()
    state_file = checkpoint / "checkpoint.json"  # as an older eft wrote it: newer options absent
    older = json.loads(state_file.read_text())
    options = ("validation_fraction", "stream", "multi_label", "label_separator")
    for option in options[:2] if method == "multi-label" else options:
        del older["cli_args"][option]
    state_file.write_text(json.dumps(older))

    resumed = run_eft("train", "--resume", str(checkpoint), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert out.is_dir() and not checkpoint.exists()
    a = EFTClassifier.from_pretrained(tmp_path / "whole", device="cpu")
    b = EFTClassifier.from_pretrained(out, device="cpu")
    assert a.multi_label_ is b.multi_label_ is (method == "multi-label")
    np.testing.assert_array_equal(a.predict(TEXTS), b.predict(TEXTS))
    np.testing.assert_allclose(
        a.decision_function(TEXTS), b.decision_function(TEXTS), rtol=1e-5, atol=1e-6
    )
    meta = json.loads((out / "eft_config.json").read_text())
    assert len(meta["history"]["bp_epoch_seconds"]) == len(
        json.loads((tmp_path / "whole" / "eft_config.json").read_text())["history"][
            "bp_epoch_seconds"
        ]
    )


def test_ctrl_c_leaves_no_model_and_says_how_to_resume(tiny_bert_dir, tmp_path):
    args, _ = _slow_run(tmp_path, tiny_bert_dir, epochs=5)
    out = tmp_path / "model"
    process = _start_and_wait_for_checkpoint(
        [*args, "--output", str(out)], tmp_path / "model.checkpoint"
    )
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Resume with: eft train --resume" in stderr
    assert not out.exists()


def test_resume_refuses_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(InputError, match="not an eft checkpoint"):
        read_checkpoint(tmp_path)
    result = run_eft("train", "--resume", str(tmp_path))
    assert result.returncode == 2 and "not an eft checkpoint" in result.stderr
    (tmp_path / "checkpoint.json").write_text('{"format": "eft-checkpoint", ')  # cut short
    with pytest.raises(InputError, match="checkpoint.json is damaged .*delete"):
        read_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("[1]")
    with pytest.raises(InputError, match="format None version None is not a checkpoint"):
        read_checkpoint(tmp_path)


def test_run_progress_keeps_parts_and_tells_a_run_continued_on_another_machine(tmp_path):
    from eft.checkpoint import RunProgress

    folder = tmp_path / "bench_x.checkpoint"
    here = {
        "cpu_model": "Intel",
        "gpu": None,
        "usable_cores": 2,
        "date_utc": "d",
        "git_commit": "c",
    }
    first = RunProgress.open(folder, "bench", "digest")
    assert not first.continued and first.kept == [] and first.add_process(here)
    first.part_folder("bp").mkdir()  # a part's own checkpoint goes when the part is kept
    first.keep({"bp": {"test_score": 61.0}})
    assert not first.part_folder("bp").exists()
    again = RunProgress.open(folder, "bench", "digest")
    assert again.continued and again.kept == ["bp"] and again.parts == {"bp": {"test_score": 61.0}}
    assert again.add_process(here)  # the same machine
    assert not again.add_process({**here, "cpu_model": "AMD"})  # times would be mixed
    resumed = RunProgress.open(folder, "bench", "digest").resumed()
    assert resumed["parts_from_earlier_process"] == ["bp"] and not resumed["same_machine"]
    assert [p["cpu_model"] for p in resumed["processes"]] == ["Intel", "Intel", "AMD"]
    with pytest.raises(InputError, match="`eft bench` run with other data or options"):
        RunProgress.open(folder, "bench", "another digest")
    with pytest.raises(InputError, match="other data or options"):  # another command's
        RunProgress.open(folder, "experiment", "digest")
    assert again.part_folder("row a/seed42").parent == folder  # one folder per part
    (folder / "run_state.json").write_text("{")
    with pytest.raises(InputError, match="Cannot read the checkpoint .* of an interrupted `eft"):
        RunProgress.open(folder, "bench", "digest")
    again.finish()
    assert not folder.exists()
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="in the way"):
        RunProgress.open(folder, "bench", "digest")
    assert (folder / "notes.txt").is_file()
    assert RunProgress.open(None, "bench", "digest").part_folder("bp") is None  # --no-checkpoint


def test_resume_refuses_a_checkpoint_of_other_labels_or_settings(tiny_bert_dir, tmp_path):
    from eft import EFTConfig

    folder = tmp_path / "checkpoint"
    values = dict(model=str(tiny_bert_dir), n_hidden=16, batch_size=8, device="cpu", progress=False)
    config = EFTConfig(**values, bp_epochs=1, checkpoint_dir=str(folder))
    EFTClassifier(config).fit(TEXTS, LABELS)
    other = EFTConfig(**values, bp_epochs=1, learning_rate=1e-3, checkpoint_dir=str(folder))
    with pytest.raises(InputError, match="other settings \\(learning_rate 0.0002 there, 0.001"):
        EFTClassifier(other).fit(TEXTS, LABELS, resume_from=folder)
    clipped = EFTConfig(**values, bp_epochs=1, max_grad_norm=0.5, checkpoint_dir=str(folder))
    with pytest.raises(InputError, match="max_grad_norm 1.0 there, 0.5 here"):
        EFTClassifier(clipped).fit(TEXTS, LABELS, resume_from=folder)
    renamed = ["good" if y == "pos" else y for y in LABELS]
    with pytest.raises(InputError, match="written for the labels \\['neg', 'pos'\\]"):
        EFTClassifier(config).fit(TEXTS, renamed, resume_from=folder)
    # other training data with the same labels: other texts, fewer rows, sample weights
    for texts, labels, weights in (
        ([t.upper() for t in TEXTS], LABELS, None),
        (TEXTS[:32], LABELS[:32], None),
        (TEXTS, LABELS, np.linspace(1, 2, len(TEXTS))),
    ):
        with pytest.raises(InputError, match="was written for other training data"):
            EFTClassifier(config).fit(texts, labels, resume_from=folder, sample_weight=weights)
    # the caller's checkpoint_metadata cannot hide eft's own fields (a key "data" made every
    # resume "other training data")
    mine = tmp_path / "mine"
    config_mine = EFTConfig(**values, bp_epochs=1, checkpoint_dir=str(mine))
    EFTClassifier(config_mine).fit(TEXTS, LABELS, checkpoint_metadata={"data": "v1", "epoch": 9})
    assert json.loads((mine / "checkpoint.json").read_text())["epoch"] == 1
    EFTClassifier(config_mine).fit(TEXTS, LABELS, resume_from=mine)
    # a damaged checkpoint is named, not a traceback from safetensors or a silent misstep
    import shutil

    for number, (damage, message) in enumerate(
        (
            (lambda f: (f / "optimizer.safetensors").unlink(), "is incomplete: optimizer"),
            (
                lambda f: _flip_last_byte(f / "model.safetensors"),
                "recorded in checkpoint.json): the file is damaged; delete",
            ),
            (lambda f: _edit_state(f, epoch="one"), "its 'epoch' ('one') is not the number"),
            (lambda f: _edit_state(f, epoch=5), "its 'epoch' (5) is not the number"),
        )
    ):
        damaged = shutil.copytree(folder, tmp_path / f"damaged{number}")
        damage(damaged)
        with pytest.raises(InputError, match=re.escape(message)):
            EFTClassifier(config).fit(TEXTS, LABELS, resume_from=damaged)
    longer = EFTConfig(**values, bp_epochs=2, checkpoint_dir=str(folder))  # more epochs: fine
    state_file = folder / "checkpoint.json"  # the earlier process's epoch took 100 s
    state = json.loads(state_file.read_text())
    state["result"]["epoch_seconds"] = [100.0]
    state_file.write_text(json.dumps(state))
    start = time.perf_counter()
    resumed = EFTClassifier(longer).fit(TEXTS, LABELS, resume_from=folder)
    wall = time.perf_counter() - start
    assert resumed.history_["bp_epoch_seconds"][0] == 100.0
    # the total counts the earlier process's epoch, as "bp" and "train" do
    timings = resumed.timings_
    assert timings["bp"] >= 100 and timings["train"] <= timings["total"] <= wall + 100


def test_the_fp16_loss_scale_is_checkpointed_and_restored(tmp_path):
    """fp16 training (a CUDA GPU) resumes at the loss scale it reached, not the initial one;
    a CPU GradScaler stands in for accelerate's."""
    import torch

    from eft.backprop import BPResult
    from eft.checkpoint import restore_checkpoint, save_checkpoint

    def parts(scale: float):
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        return model, optimizer, scheduler, scaler

    model, optimizer, scheduler, scaler = parts(65536.0)
    scaler.scale(torch.ones(()))  # the scale is made at first use
    scaler.update(new_scale=512.0)  # as after overflowing steps halved it
    save_checkpoint(
        tmp_path / "c",
        1,
        model,
        optimizer,
        scheduler,
        BPResult(epoch_seconds=[1.0]),
        {},
        {},
        scaler,
    )
    assert read_checkpoint(tmp_path / "c")["grad_scaler"]["scale"] == 512.0
    *others, fresh = parts(65536.0)
    restore_checkpoint(tmp_path / "c", *others, fresh)
    assert fresh.get_scale() == 512.0
    # float32 or bf16 training has no scaler: nothing saved, nothing to restore
    save_checkpoint(
        tmp_path / "d", 1, model, optimizer, scheduler, BPResult(epoch_seconds=[1.0]), {}, {}
    )
    assert "grad_scaler" not in read_checkpoint(tmp_path / "d")
    *others, fresh = parts(65536.0)
    restore_checkpoint(tmp_path / "d", *others, fresh)  # an older checkpoint: initial scale
    assert fresh.get_scale() == 65536.0


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_state(folder, **changes):
    state = json.loads((folder / "checkpoint.json").read_text())
    state.update(changes)
    (folder / "checkpoint.json").write_text(json.dumps(state))
