"""What a result records about the machine and the code that produced it."""

from __future__ import annotations

import platform

import pytest

from eft.provenance import cpu_instruction_set, git_commit, machine_info, machine_markdown

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def test_git_commit_reads_loose_packed_and_worktree_refs(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "refs" / "heads" / "main").write_text(COMMIT + "\n")
    (repo / "src" / "deep").mkdir(parents=True)
    assert git_commit(repo / "src" / "deep") == COMMIT  # found from a subfolder
    (repo / ".git" / "refs" / "heads" / "main").unlink()
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs\n{OTHER} refs/heads/main\n")
    assert git_commit(repo) == OTHER
    # a worktree: .git is a file naming its own git dir, whose refs live in the common dir
    worktree_git = repo / ".git" / "worktrees" / "wt"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/main\n")
    (worktree_git / "commondir").write_text("../..\n")
    tree = tmp_path / "wt"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert git_commit(tree) == OTHER
    (worktree_git / "HEAD").write_text(COMMIT + "\n")  # detached
    assert git_commit(tree) == COMMIT
    assert git_commit(tmp_path / "elsewhere-without-git") in (None, git_commit(tmp_path))


def test_machine_info_names_machine_versions_and_command():
    info = machine_info()
    assert info["logical_cores"] >= 1 and info["torch_num_threads"] >= 1
    assert info["versions"]["torch"] and info["versions"]["eft"]
    assert info["command"] and info["date_utc"].endswith("+00:00")
    text = machine_markdown({**info, "load_average_at_end": [0.0, 0.0, 0.0]})
    assert info["command"] in text and f"torch {info['versions']['torch']}" in text
    isa = info["cpu_instruction_set"]  # two hosts with one model name can differ here
    assert isa["isa"] in text and isa["native_bf16"] in (True, False, None)
    bf16 = {True: "(%s, native bf16)", False: "(%s, no native bf16)"}.get(isa["native_bf16"])
    assert bf16 is None or bf16 % isa["isa"] in text
    older = {k: v for k, v in info.items() if k != "cpu_instruction_set"}  # runs before it
    assert f"- CPU: {info['cpu_model']}; " in machine_markdown(older)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU probes")
def test_cpu_instruction_set_probes_exist_in_the_pinned_torch():
    # cpu_instruction_set reads private torch probes and answers None where a build lacks them,
    # which silences the bf16 RuntimeWarning: a torch upgrade that renames them must show here.
    import torch

    assert callable(torch.cpu._is_avx512_bf16_supported)
    assert callable(torch.cpu._is_amx_tile_supported)
    assert cpu_instruction_set()["native_bf16"] in (True, False)
