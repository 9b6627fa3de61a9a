"""What used to end in a traceback is one line with exit code 2 and nothing half-written: ``--out`` naming a file or
an unwritable directory, ``evaluate --policy`` given a non-policy or a pickled file (whose code never runs), a
malformed allocation file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from attack_tasks import SPEC, Payload, prove_live, torch_payload

from agents.cli import main


def _one_line(capsys, *words: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prune-rnn: error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "code from a file ran"


@pytest.mark.parametrize("argv", [
    ["bench", "--task", SPEC, "--agents", "uniform", "--max-evals", "1"],
    ["train", "--task", SPEC, "--agent", "uniform", "--sparsity", "0.5", "--max-evals", "1"],
    ["compress", "--task", SPEC, "--agent", "uniform", "--sparsity", "0.5", "--steps", "1"],
])
def test_out_naming_a_file_is_one_line(tmp_path, capsys, argv):
    target = tmp_path / "a-file"
    target.write_text("keep me\n")
    assert main([*argv, "--out", str(target), "--no-progress"]) == 2
    _one_line(capsys, "--out", "is a file")
    assert target.read_text() == "keep me\n"


def test_out_that_cannot_be_created_is_one_line(tmp_path, capsys, monkeypatch):
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["bench", "--task", SPEC, "--agents", "uniform", "--max-evals", "1", "--out",
                 str(tmp_path / "ro" / "runs"), "--no-progress"]) == 2
    _one_line(capsys, "--out: cannot create", "Permission denied")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that file modes restrict")
def test_out_in_a_read_only_directory_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["train", "--task", SPEC, "--agent", "uniform", "--sparsity", "0.5", "--max-evals", "1",
                     "--out", str(ro), "--no-progress"]) == 2
        _one_line(capsys, "--out")
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o700)


def test_a_pickled_policy_never_runs(tmp_path, capsys, marker):
    path = tmp_path / "policy.pt"
    torch_payload(path, marker)
    prove_live(marker, lambda: torch.load(path, weights_only=False))
    assert main(["evaluate", "--task", SPEC, "--policy", str(path), "--sparsity", "0.5"]) == 2
    _one_line(capsys, "--policy:", "is not a policy written by prune-rnn train")


@pytest.mark.parametrize("name, content", [
    ("policy.pt", b"not a torch file"),
    ("policy.zip", b"PK\x03\x04 truncated"),
    ("policy.zip", None),  # a zip whose data member is a pickled payload, as Stable-Baselines3 would unpickle it
])
def test_a_non_policy_file_is_one_line(tmp_path, capsys, marker, name, content):
    import zipfile

    path = tmp_path / name
    if content is None:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data", '{"policy_kwargs": {":serialized:": "' + pickle.dumps(Payload(marker)).hex() + '"}}')
            z.writestr("policy.pth", pickle.dumps(Payload(marker)))
    else:
        path.write_bytes(content)
    assert main(["evaluate", "--task", SPEC, "--policy", str(path), "--sparsity", "0.5"]) == 2
    _one_line(capsys, "--policy:")


@pytest.mark.parametrize("content, words", [
    ("{", "is not JSON"),
    ("[1, 2]", "holds no {layer: sparsity} mapping"),
    ('{"allocation": {"emb.weight": "lots"}}', "not a number"),
    ('{"allocation": {"no.such.layer": 0.5}}', "--allocation"),
])
def test_a_malformed_allocation_is_one_line(tmp_path, capsys, content, words):
    path = tmp_path / "allocation.json"
    path.write_text(content)
    assert main(["evaluate", "--task", SPEC, "--allocation", str(path)]) == 2
    _one_line(capsys, words)
