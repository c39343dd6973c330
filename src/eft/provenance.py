"""What produced a result: machine, library versions, threads, command, commit, date and load.

Every benchmark and experiment file records this next to its numbers, so that a time is never
read without the machine that measured it. Nothing here runs git or touches the network; the
commit is read from the ``.git`` files of the working directory's repository, when there is one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import shlex
import sys
from pathlib import Path
from typing import Any

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_BLOCKTIME")
VERSIONED = ("torch", "numpy", "scipy", "sklearn", "transformers", "eft")


def _read_proc(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Reads ``VmHWM`` from /proc/self/status: it starts afresh at ``exec``. ``getrusage``'s
    ``ru_maxrss`` (the fall-back off Linux) does not: in a subprocess it keeps the parent's peak
    at the fork, which would hide the child's own footprint.
    """
    hwm = _read_proc("/proc/self/status", "VmHWM")
    if hwm is not None:
        return float(hwm.split()[0]) / 1024.0
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform.startswith("linux") else kib / 2**20


def git_commit(start: str | os.PathLike | None = None) -> str | None:
    """The commit checked out in the repository around ``start`` (default: the working
    directory), read from ``.git`` without running git; None when unknown.

    Handles a ``.git`` folder and a ``.git`` file (worktrees, submodules: ``gitdir: PATH``).
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        dot_git = folder / ".git"
        if dot_git.exists():
            break
    else:
        return None
    try:
        git = dot_git
        if dot_git.is_file():
            line = dot_git.read_text(encoding="utf-8").strip()
            git = (folder / line.split(":", 1)[1].strip()).resolve()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for root in dict.fromkeys((git, common)):
            if (root / ref).is_file():
                return (root / ref).read_text(encoding="utf-8").strip()
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text(encoding="utf-8").splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except (OSError, IndexError):
        return None
    return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # a missing optional package is reported as None
        return None


def _threadpools() -> list[dict[str, Any]]:
    """BLAS / OpenMP libraries loaded so far and their thread counts (via threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "num_threads", "version", "prefix")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS does not tell)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_instruction_set() -> dict[str, Any]:
    """The vector instructions torch uses on this CPU ("AVX2", "AVX512", ...) and whether the
    CPU has native bf16 (AVX512-BF16 or AMX): two hosts with the same model name may differ."""
    import torch

    def has(name: str) -> bool | None:  # private torch probes; None where a build lacks one
        probe = getattr(torch.cpu, name, None)
        return bool(probe()) if probe is not None else None

    bf16 = [has("_is_avx512_bf16_supported"), has("_is_amx_tile_supported")]
    return {
        "isa": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": None if None in bf16 else any(bf16),
    }


def machine_info() -> dict[str, Any]:
    """CPU, GPU, cores, RAM, library versions, torch threads, command line, commit, date, load."""
    import torch

    mem_kib = _read_proc("/proc/meminfo", "MemTotal")
    ram_gib = float(mem_kib.split()[0]) / 2**20 if mem_kib else None
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    return {
        "cpu_model": _read_proc("/proc/cpuinfo", "model name") or platform.processor() or None,
        "cpu_instruction_set": cpu_instruction_set(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "ram_gib": None if ram_gib is None else round(ram_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONED},
        "torch_num_threads": torch.get_num_threads(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "threadpools": _threadpools(),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "cwd": os.getcwd(),
        "git_commit": git_commit(),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": load_average(),
    }


def machine_markdown(info: dict[str, Any]) -> str:
    """The machine block of a Markdown report, from :func:`machine_info`."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
    pools = ", ".join(
        f"{p['prefix']} {p['version'] or ''} ({p['num_threads']} threads)".replace("  ", " ")
        for p in info["threadpools"]
    )
    gpu = f"; GPU {info['gpu']}" if info.get("gpu") else ""
    isa = info.get("cpu_instruction_set") or {}
    bf16 = {True: "native bf16", False: "no native bf16"}.get(isa.get("native_bf16"))
    features = ", ".join(x for x in (isa.get("isa"), bf16) if x)
    lines = [
        f"- Date (UTC): {info['date_utc']}",
        f"- Command: `{info['command']}` (in `{info['cwd']}`)",
        f"- Commit: {info['git_commit'] or 'unknown'}",
        f"- CPU: {info['cpu_model']}{f' ({features})' if features else ''}; "
        f"{info['usable_cores']} usable of {info['logical_cores']} "
        f"logical cores; torch threads {info['torch_num_threads']}; RAM {info['ram_gib']} GiB"
        f"{gpu}",
        f"- Load average (1, 5, 15 min) at start: {info['load_average_at_start']}"
        + (f", at end: {info['load_average_at_end']}" if info.get("load_average_at_end") else ""),
        f"- Thread pools: {pools or 'unknown'}; thread env: {info['thread_env'] or 'none set'}",
        f"- Python {info['python']} on {info['platform']}",
        f"- Versions: {versions}",
    ]
    return "\n".join(lines)
