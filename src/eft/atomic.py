"""Atomic writes: build a file or folder beside its target, then rename it into place.

An interrupted save (Ctrl-C, a full disk, a crash) never leaves a target that looks complete.
Also the JSON encoding every saved document shares (numpy and torch scalars and arrays).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask_mode(mode: int) -> int:
    """``mode`` less the process umask: what ``open`` / ``mkdir`` would have given. The
    staging files of ``tempfile`` are private (0600 / 0700), and a save must not be."""
    umask = os.umask(0)  # the only portable way to read it (as pip does)
    os.umask(umask)
    return mode & ~umask


def _sync(path: Path, recursive: bool = True) -> None:
    """Flush ``path`` (a file, or a folder and, with ``recursive``, everything in it) to the
    disk, so that a power loss after the rename that publishes a save cannot leave a
    complete-looking one of empty or short files. Systems that cannot sync a folder
    (Windows) skip that part."""
    paths = [path]
    if recursive and path.is_dir():
        paths = [*sorted(path.rglob("*")), path]
    for item in paths:
        if item.is_symlink():
            continue
        try:
            descriptor = os.open(item, os.O_RDONLY)
        except OSError:  # a folder cannot be opened here
            continue
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def _publish(path: Path) -> None:
    """Give ``path`` and, for a folder, everything in it the mode of a plain write. Writers
    other than ``open`` make private files too: safetensors' ``save_file`` writes 0600."""
    dir_mode = _umask_mode(0o777)
    file_mode = dir_mode & 0o666
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if item.is_symlink():
            continue
        if item.is_dir():
            item.chmod(dir_mode)
        else:  # keep an executable bit the writer set
            item.chmod(dir_mode if item.stat().st_mode & 0o111 else file_mode)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``target``, on error it goes.

    An existing ``target`` is swapped with the staging folder in one step where the system
    can (Linux ``renameat2(RENAME_EXCHANGE)``), so the path always holds the old or the new
    folder; elsewhere it is renamed aside first (a crash between the two renames leaves it as
    ``.<name>.old-*``, which :func:`interrupted_save_hint` names). A symbolic link to a folder
    is written through: the folder it points to is replaced, the link stays.
    """
    target = Path(target)
    if target.is_symlink():  # replace what the link points to, keep the link
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield staging
        _publish(staging)
        _sync(staging)
        if target.exists():
            if _exchange(staging, target):  # staging now holds the old folder
                _sync(target.parent, recursive=False)
                shutil.rmtree(staging, ignore_errors=True)
                return
            # a unique name: a folder left by a crash between the renames (or another
            # thread's save) must not be in the way of this one
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            os.replace(target, old)
            os.replace(staging, target)
            _sync(target.parent, recursive=False)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
            _sync(target.parent, recursive=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


#: A staging folder untouched this long is a killed save's (a live save adds files to it).
STALE_STAGING_SECONDS = 24 * 3600


def _remove_stale_staging(target: Path) -> None:
    """Remove the staging folders of ``target`` that killed saves left (a whole copy each),
    once they are a day old; a previous folder renamed aside (``.old-*``) is kept for the
    user to take back."""
    import time

    for left in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        try:
            if left.is_dir() and time.time() - left.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(left, ignore_errors=True)
        except OSError:  # another save removed it meanwhile
            pass


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``);
    False where the system or file system cannot, and nothing was changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc before glibc 2.28
        return False
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # unsupported here: rename aside instead
    raise OSError(code, os.strerror(code), str(second))


def interrupted_save_hint(target: Path) -> str:
    """Where a save interrupted between its two renames left ``target``'s previous folder,
    as a sentence to add to a "not found" message (empty if there is none)."""
    pattern = f".{glob.escape(target.name)}.old-*"
    left = sorted(target.parent.glob(pattern)) if target.parent.is_dir() else []
    if not left:
        return ""
    return (
        f" A save into it was interrupted and left the previous folder as {left[-1].name}: "
        f"rename it to {target.name} to get it back."
    )


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(Path(tmp))
        _sync(Path(tmp))
        os.replace(tmp, target)
        _sync(target.parent, recursive=False)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; returns the target's path."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": size, "sha256": hex digest}}`` of every file in ``folder``,
    recorded by a save so that a load can tell a file changed after it (safetensors files
    carry no checksum of their own)."""
    return {
        path.relative_to(folder).as_posix(): {
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
        }
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def check_file_digests(
    folder: Path,
    files: Any,
    record: str = "eft_config.json",
    remedy: str = "save the model again, or restore the file",
) -> None:
    """Refuse a folder whose files differ from the ``files`` its save recorded in ``record``
    (None: an older save, not checked); the message ends with ``remedy``."""
    from eft.errors import InputError

    if files is None:
        return
    if not isinstance(files, dict):
        raise InputError(f"{folder}: the 'files' its save recorded are damaged; save it again.")
    for name, recorded in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise InputError(f"{folder} is incomplete: {name} is missing.")
        try:
            size, digest = recorded["bytes"], recorded["sha256"]
        except (TypeError, KeyError):
            raise InputError(f"{folder}: the record of {name} is damaged; save it again.") from None
        if path.stat().st_size != size or sha256_of(path) != digest:
            raise InputError(
                f"{path} was changed after it was written (its size or SHA-256 differs from "
                f"the one recorded in {record}): the file is damaged; {remedy}."
            )


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(target: str | os.PathLike) -> None:
    """Refuse, before the work, a ``target`` that :func:`atomic_dir` / :func:`atomic_file`
    could not create: the folder they stage in (the target's parent, or its nearest existing
    ancestor) must be a writable folder. A probe folder is made there and removed."""
    from eft.errors import InputError

    target = Path(target)
    if target.is_symlink():  # a save writes beside what the link points to (atomic_dir)
        target = Path(os.path.realpath(target))
    target = target.absolute()
    place = target.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise InputError(f"Cannot write {target}: {place} is a file, not a folder.")
    try:
        os.rmdir(tempfile.mkdtemp(dir=place, prefix=f".{target.name}.probe-"))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"Cannot write {target}: {place} is not writable ({reason}).") from None


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy and torch scalars and arrays."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
