"""BP-stage checkpoints, so that an interrupted run resumes to the same model.

After every BP epoch the encoder, linear head, AdamW moments, scheduler position, RNG states,
per-epoch record and (for early stopping) the best weights are written to a folder, atomically
(temporary folder + rename). Tensors go to safetensors, everything else to JSON: no pickle.
Only torch's generators need saving: the batch order is seeded per epoch, and nothing in the
loop draws from Python's or numpy's global generators.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eft.atomic import atomic_dir
from eft.errors import InputError

CHECKPOINT_FORMAT = "eft-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "checkpoint.json"


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share memory
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def save_checkpoint(
    folder: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    result: Any,
    best: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """Write the state after ``epoch`` finished BP epochs to ``folder`` (replacing it)."""
    with atomic_dir(folder) as staging:
        save_file(_tensors(model.state_dict()), staging / "model.safetensors")
        optimizer_state = optimizer.state_dict()
        moments = {
            f"{index}.{name}": value
            for index, slots in optimizer_state["state"].items()
            for name, value in slots.items()
            if isinstance(value, torch.Tensor)
        }
        save_file(_tensors(moments), staging / "optimizer.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for index, state in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda.{index}"] = state
        save_file(_tensors(rng), staging / "rng.safetensors")
        if best.get("state") is not None:
            save_file(_tensors(best["state"]), staging / "best_model.safetensors")
        scheduler_state = {
            k: v for k, v in scheduler.state_dict().items() if k in ("last_epoch", "_step_count")
        }
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "param_groups": optimizer_state["param_groups"],
            "scheduler": scheduler_state,
            "result": asdict(result),
            "best_score": best.get("score"),
            "since_best": best.get("since_best", 0),
            **metadata,
        }
        (staging / STATE_FILE).write_text(json.dumps(state, default=float), encoding="utf-8")


def read_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """The JSON part of a checkpoint, checked."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise InputError(
            f"{folder} is not an eft checkpoint ({STATE_FILE} is missing). Checkpoints are the "
            f"'<output>.checkpoint' folders that `eft train` writes after each BP epoch."
        )
    state = json.loads(path.read_text(encoding="utf-8"))
    if (
        state.get("format") != CHECKPOINT_FORMAT
        or state.get("format_version") != CHECKPOINT_VERSION
    ):
        raise InputError(
            f"{path}: format {state.get('format')!r} version {state.get('format_version')!r} is "
            f"not a checkpoint this eft can resume."
        )
    return state


def restore_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Load weights, optimizer, scheduler and RNG states; returns the JSON part."""
    folder = Path(folder)
    state = read_checkpoint(folder)
    device = next(model.parameters()).device
    model.load_state_dict(
        {k: v.to(device) for k, v in load_file(folder / "model.safetensors").items()}
    )
    moments = load_file(folder / "optimizer.safetensors")
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    scheduler_state = scheduler.state_dict()
    scheduler_state.update(state["scheduler"])
    scheduler.load_state_dict(scheduler_state)
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    best_file = folder / "best_model.safetensors"
    state["best_state"] = load_file(best_file) if best_file.is_file() else None
    return state
