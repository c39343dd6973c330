import json
import os
import stat
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eft.atomic import atomic_dir, atomic_file, json_default, write_text


def test_atomic_file_keeps_the_old_target_when_the_write_fails(tmp_path):
    target = write_text(tmp_path / "out" / "report.json", "old\n")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temp file left
    write_text(target, "new\n")
    assert target.read_text(encoding="utf-8") == "new\n"


def test_atomic_dir_replaces_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "b.txt").write_text("2")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_dir(target) as staging:
        (staging / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # a folder left by a crash between the two renames is not in the way of the next save
    left = tmp_path / f".model.old-{os.getpid()}"
    left.mkdir()
    (left / "c.txt").write_text("3")
    with atomic_dir(target) as staging:
        (staging / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]


def test_atomic_dir_swaps_in_one_step_and_writes_through_links(tmp_path, monkeypatch):
    """A crash between the two renames left no folder at the target (review I, F7): the
    swap is one step where the system can, and the fallback's leftover is named; a link to a
    folder kept a renamed link behind (F10)."""
    import eft.atomic
    from eft.atomic import interrupted_save_hint

    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("1")
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((a, b)) or replace(a, b))
    with atomic_dir(target) as staging:
        (staging / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    if eft.atomic._exchange(tmp_path, tmp_path):  # a system that swaps (Linux): no rename
        assert renames == []
    # the fallback's window: the previous folder renamed aside, the new one not yet in place
    monkeypatch.setattr(eft.atomic, "_exchange", lambda a, b: False)

    def crash_after_the_first(a, b):
        replace(a, b)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash_after_the_first)
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as staging:
        (staging / "c.txt").write_text("3")
    monkeypatch.setattr(os, "replace", replace)
    assert not target.exists()
    hint = interrupted_save_hint(target)
    assert "left the previous folder as .model.old-" in hint and "rename it to model" in hint
    from eft import EFTClassifier, InputError

    with pytest.raises(InputError, match="No model folder at .* rename it to model"):
        EFTClassifier.from_pretrained(target)
    # a link to a folder: the folder it points to is replaced, the link stays a link
    real = tmp_path / "real_v1"
    with atomic_dir(real) as staging:
        (staging / "a.txt").write_text("1")
    link = tmp_path / "latest"
    link.symlink_to(real)
    with atomic_dir(link) as staging:
        (staging / "b.txt").write_text("2")
    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == ["b.txt"]
    assert not list(tmp_path.glob(".latest*")) and not list(tmp_path.glob(".real_v1.*"))
    # the staging folders of killed saves go once a day old; a recent one may be a live save's
    stale, recent = tmp_path / ".real_v1.tmp-killed", tmp_path / ".real_v1.tmp-live"
    for folder in (stale, recent):
        folder.mkdir()
        (folder / "model.safetensors").write_text("half")
    day_ago = time.time() - eft.atomic.STALE_STAGING_SECONDS - 60
    os.utime(stale, (day_ago, day_ago))
    with atomic_dir(real) as staging:
        (staging / "c.txt").write_text("3")
    assert not stale.exists() and recent.is_dir()
    # names are matched as names, not as glob patterns: m[1]'s hint is not about m1's folder
    (tmp_path / ".m1.old-abc").mkdir()
    assert interrupted_save_hint(tmp_path / "m[1]") == ""
    assert ".m1.old-abc" in interrupted_save_hint(tmp_path / "m1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_saves_are_flushed_to_the_disk_before_they_are_published(tmp_path, monkeypatch):
    """Without fsync a power loss after the rename could leave a complete-looking save of
    empty files (review I, F14): every staged file and folder, then the parent, are synced."""
    synced = []
    fsync = os.fsync

    def record(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", record)
    with atomic_dir(tmp_path / "model") as staging:
        (staging / "a.txt").write_text("1")
        (staging / "b.txt").write_text("2")
    names = [os.path.basename(p) for p in synced]
    assert names[:2] == ["a.txt", "b.txt"] and names[-1] == tmp_path.name
    synced.clear()
    write_text(tmp_path / "report.json", "{}")
    assert len(synced) == 2 and synced[-1] == str(tmp_path)


def test_json_default_stores_numpy_and_torch_values():
    document = {
        "np_int": np.int64(3),
        "np_float": np.float32(0.5),
        "array": np.arange(3),
        "tensor_scalar": torch.tensor(2.5),
        "tensor": torch.tensor([1, 2]),
    }
    assert json.loads(json.dumps(document, default=json_default)) == {
        "np_int": 3,
        "np_float": 0.5,
        "array": [0, 1, 2],
        "tensor_scalar": 2.5,
        "tensor": [1, 2],
    }
    with pytest.raises(TypeError, match="set"):
        json.dumps({"x": {1}}, default=json_default)


def test_saves_get_the_permissions_of_a_plain_write(tmp_path):
    # tempfile makes private staging files (0600) and folders (0700); a saved model or
    # result must be readable as a plain open()/mkdir() under the user's umask would make it.
    old_umask = os.umask(0o022)
    try:
        plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain"
        plain_file.write_text("x")
        plain_dir.mkdir()
        saved_file = write_text(tmp_path / "saved.txt", "x")
        with atomic_dir(tmp_path / "saved") as staging:
            (staging / "inner.json").write_text("{}")
            # safetensors writes its files private (0600), as a library's writer may
            save_file({"w": torch.zeros(2)}, staging / "weights.safetensors")
            (staging / "sub").mkdir(mode=0o700)
            (staging / "sub" / "run.sh").write_text("#!/bin/sh\n")
            (staging / "sub" / "run.sh").chmod(0o700)
        with atomic_file(tmp_path / "head.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, tmp)
    finally:
        os.umask(old_umask)

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    saved = tmp_path / "saved"
    assert mode(saved_file) == mode(plain_file) == 0o644
    assert mode(saved) == mode(saved / "sub") == mode(plain_dir) == 0o755
    for name in ("inner.json", "weights.safetensors"):
        assert mode(saved / name) == 0o644, name
    assert mode(tmp_path / "head.safetensors") == 0o644
    assert mode(saved / "sub" / "run.sh") == 0o755  # an executable stays executable
