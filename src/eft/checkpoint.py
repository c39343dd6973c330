"""BP-stage checkpoints, so that an interrupted run resumes to the same model; and the
finished parts of long commands (:class:`RunProgress`), so that they continue.

After every BP epoch the encoder, linear head, AdamW moments, scheduler position, RNG states,
per-epoch record and (for early stopping) the best weights are written to a folder, atomically
(temporary folder + rename). Tensors go to safetensors, everything else to JSON: no pickle.
Only torch's generators need saving: the batch order is seeded per epoch, and nothing in the
loop draws from Python's or numpy's global generators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from eft.atomic import (
    atomic_dir,
    check_file_digests,
    file_digests,
    interrupted_save_hint,
    json_default,
    write_text,
)
from eft.errors import InputError

if TYPE_CHECKING:
    from eft.config import EFTConfig

CHECKPOINT_FORMAT = "eft-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "checkpoint.json"


def json_digest(*parts: Any) -> str:
    """SHA-256 of JSON-able ``parts`` (numpy arrays as lists): a resumable run keeps the digest
    of what decides its results (data, options) and refuses to continue with other ones."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=json_default).encode("utf-8"))
    return digest.hexdigest()


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share memory
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def read_run_state(path: Path, expected: dict[str, Any], what: str) -> dict[str, Any]:
    """The JSON state of an interrupted run kept at ``path``, whose ``expected`` fields (format,
    digest of data and options) must match this run's; ``what`` names the run in errors."""
    folder = path.parent
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(
            f"Cannot read the checkpoint {path} of an interrupted {what}: {error}. Delete "
            f"{folder} to start over."
        ) from error
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in expected.items()):
        raise InputError(
            f"{folder} holds an interrupted {what} with other data or options. Run that "
            f"command again to finish it, or delete {folder} to start over."
        )
    return saved


def save_checkpoint(
    folder: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    result: Any,
    best: dict[str, Any],
    metadata: dict[str, Any],
    scaler: Any = None,
) -> None:
    """Write the state after ``epoch`` finished BP epochs to ``folder`` (replacing it); with
    fp16 training, the ``scaler``'s (a ``torch.amp.GradScaler``) loss scale too."""
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
        state = {  # the caller's metadata first: a key of its own cannot hide eft's
            **metadata,
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "param_groups": optimizer_state["param_groups"],
            "scheduler": scheduler_state,
            "result": asdict(result),
            "best_score": best.get("score"),
            "since_best": best.get("since_best", 0),
        }
        if scaler is not None and scaler.is_enabled():
            state["grad_scaler"] = scaler.state_dict()  # numbers: scale, growth tracker, ...
        state["files"] = file_digests(staging)  # checked when the tensors are restored
        (staging / STATE_FILE).write_text(json.dumps(state, default=float), encoding="utf-8")


def read_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """The JSON part of a checkpoint, checked."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise InputError(
            f"{folder} is not an eft checkpoint ({STATE_FILE} is missing). Checkpoints are the "
            f"'<output>.checkpoint' folders that `eft train` writes after each BP epoch."
            + interrupted_save_hint(Path(folder))
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"{path} is damaged ({error}); delete {folder} to train from the start."
        ) from error
    if not isinstance(state, dict):
        state = {}  # reported below as a format None
    if (
        state.get("format") != CHECKPOINT_FORMAT
        or state.get("format_version") != CHECKPOINT_VERSION
    ):
        raise InputError(
            f"{path}: format {state.get('format')!r} version {state.get('format_version')!r} is "
            f"not a checkpoint this eft can resume."
        )
    epoch, result = state.get("epoch"), state.get("result")
    seconds = result.get("epoch_seconds") if isinstance(result, dict) else None
    if (
        not isinstance(epoch, int)
        or isinstance(epoch, bool)
        or epoch < 1
        or not isinstance(seconds, list)
        or len(seconds) != epoch
    ):
        raise InputError(
            f"{path} is damaged: its 'epoch' ({epoch!r}) is not the number of epochs its "
            f"record holds; delete {folder} to train from the start."
        )
    return state


def resumable_fit(
    config: EFTConfig, folder: Path | None
) -> tuple[EFTConfig, Path | None, int | None]:
    """A fit that saves its BP checkpoints to ``folder`` and continues from the one an
    interrupted fit left there: ``config`` with that ``checkpoint_dir``, the folder to pass as
    ``resume_from`` (None for a fresh fit) and its finished BP epochs (None likewise)."""
    if folder is None:
        return config, None, None
    config = dataclasses.replace(config, checkpoint_dir=str(folder))
    if not (folder / STATE_FILE).is_file():
        return config, None, None
    return config, folder, int(read_checkpoint(folder)["epoch"])


def restore_checkpoint(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any = None,
) -> dict[str, Any]:
    """Load weights, optimizer, scheduler, RNG and (fp16) loss-scaler states; returns the JSON
    part."""
    folder = Path(folder)
    state = read_checkpoint(folder)
    check_file_digests(  # older checkpoints: not recorded
        folder, state.get("files"), STATE_FILE, f"delete {folder} to train from the start"
    )
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        if not (folder / name).is_file():
            raise InputError(f"{folder} is incomplete: {name} is missing.")
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
    if scaler is not None and scaler.is_enabled() and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])  # older checkpoints: the initial scale
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    best_file = folder / "best_model.safetensors"
    state["best_state"] = load_file(best_file) if best_file.is_file() else None
    return state


RUN_STATE_FILE = "run_state.json"
MACHINE_FIELDS = ("cpu_model", "gpu", "usable_cores")
"""What must match for times measured by two processes of one run to be compared."""


def count_in_state(path: Path, key: str) -> int:
    """The length of the list ``key`` of the JSON state file ``path`` (0 where there is no
    readable file, or no such list): what an interrupted run finished."""
    try:
        return len(json.loads(path.read_text(encoding="utf-8")).get(key, []))
    except (OSError, ValueError, AttributeError):
        return 0


def finished_parts(folder: str | os.PathLike) -> int:
    """How many parts (runs, methods) an interrupted ``eft bench`` or ``eft experiment`` run
    finished in ``folder`` (0 where it holds none, or no readable state)."""
    return count_in_state(Path(folder) / RUN_STATE_FILE, "finished")


class RunProgress:
    """The finished parts of a long command (``eft bench``, ``eft experiment``), kept in a
    folder so that the same command, run again after an interruption, skips them.

    A part is anything JSON-able under a name (a method's record and test predictions); the
    part in progress may keep its own checkpoint in :meth:`part_folder` (an encoder after each
    BP epoch), which goes when the part is kept. The folder holds ``run_state.json``: the
    digest of the run's data and options (another run's folder is refused), the parts in the
    order they finished, and the machine of every process that worked on the run. ``folder``
    None keeps nothing."""

    def __init__(self, folder: Path | None, command: str, state: dict[str, Any]) -> None:
        self.folder = folder
        self.command = command
        self.state = state
        self.kept: list[str] = list(state["finished"])
        """The parts finished by earlier processes."""
        self.continued = bool(state["processes"])
        """Whether an earlier process worked on this run (even if it finished no part)."""

    @classmethod
    def open(cls, folder: str | os.PathLike | None, command: str, digest: str) -> RunProgress:
        """Continue the run kept in ``folder`` (same ``digest`` of data and options) or start
        one there. A folder of another run, or one that is not a run checkpoint, is an
        InputError."""
        state = {
            "format": f"eft-{command}-checkpoint",
            "format_version": CHECKPOINT_VERSION,
            "fingerprint": digest,
            "parts": {},
            "finished": [],
            "processes": [],
        }
        if folder is None:
            return cls(None, command, state)
        folder = Path(folder)
        path = folder / RUN_STATE_FILE
        if not path.is_file():
            if folder.exists():
                raise InputError(
                    f"{folder} is in the way of this run's checkpoint folder and is not one (it "
                    f"has no {RUN_STATE_FILE}): move or delete it, or pass --no-checkpoint."
                )
            progress = cls(folder, command, state)
            progress.save()
            return progress
        expected = {key: state[key] for key in ("format", "format_version", "fingerprint")}
        saved = read_run_state(path, expected, f"`eft {command}` run")
        return cls(folder, command, saved)

    @property
    def parts(self) -> dict[str, Any]:
        return self.state["parts"]

    def add_process(self, machine: dict[str, Any]) -> bool:
        """Record this process's machine (from :func:`eft.provenance.machine_info`). False,
        with a warning, when an earlier process ran on another machine: times measured there
        and here are not comparable."""
        here = {f: machine.get(f) for f in (*MACHINE_FIELDS, "date_utc", "git_commit")}
        self.state["processes"].append(here)
        self.save()
        if self.same_machine():
            return True
        first = self.state["processes"][0]
        print(
            f"warning: an earlier process of this run ran on another machine "
            f"({first['cpu_model']}, GPU {first['gpu']}, {first['usable_cores']} cores): its "
            f"times and this machine's are mixed in the results. Delete {self.folder} to run "
            "everything here.",
            file=sys.stderr,
        )
        return False

    def same_machine(self) -> bool:
        processes = self.state["processes"]
        return len({tuple(p[f] for f in MACHINE_FIELDS) for p in processes}) <= 1

    def part_folder(self, name: str) -> Path | None:
        """Where the part in progress may keep its own checkpoint (None without a folder)."""
        return None if self.folder is None else self.folder / re.sub(r"[^\w.-]", "_", name)

    def keep(self, parts: dict[str, Any]) -> None:
        """Record finished parts (at once) and drop their own checkpoints."""
        self.state["parts"].update(parts)
        self.state["finished"] += list(parts)
        self.save()
        for name in parts:
            if (folder := self.part_folder(name)) is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def resumed(self) -> dict[str, Any]:
        """For the results of a continued run: what earlier processes measured, and where."""
        return {
            "parts_from_earlier_process": self.kept,
            "processes": self.state["processes"],
            "same_machine": self.same_machine(),
        }

    def save(self) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.state, default=json_default) + "\n"
            write_text(self.folder / RUN_STATE_FILE, text)

    def finish(self) -> None:
        """The run's results are written: the folder goes."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
