"""prune_env.io: a write either lands whole or leaves the old file as it was, and no temporary file behind."""

from __future__ import annotations

import os

import pytest
import torch

from prune_env.io import atomic_save_torch, atomic_write, atomic_write_with


def test_atomic_write_bytes_and_text(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the folder is created
    atomic_write(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    atomic_write(str(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["a.txt"]
    with pytest.raises(TypeError, match="data"):
        atomic_write(path, 3)
    assert path.read_bytes() == b"\x00\x01"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write(path, b"old")

    def half_then_fail(f):
        f.write(b"half a file")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write_with(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    atomic_write(path, b"old")

    def no_rename(src, dst):
        raise OSError("read-only")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="read-only"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]


def test_atomic_save_torch_round_trips(tmp_path):
    path = tmp_path / "t.pt"
    atomic_save_torch({"w": torch.arange(3), "n": 2}, path)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(3)) and loaded["n"] == 2
