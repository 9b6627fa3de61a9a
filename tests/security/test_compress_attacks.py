"""``prune-rnn compress`` does not trust its stage files: an edited, swapped, re-sealed or pickled stage is redone
(with a warning) or refused, the report recomputes what it shows from the files, and a full disk is one line with
nothing half-written. The stand-in for code run is a marker file that must never appear."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from attack_tasks import SPEC, edit_json, prove_live, tiny, torch_payload

import agents.cli.compress as C
from agents.cli import main
from agents.cli.compress_stages import write_stage
from prune_env.compression.export import export

KW = {"agent": "uniform", "steps": 2}
TARGET = 0.6


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compress") / "run"
    C.compress(tiny(), TARGET, out, **KW)
    return out


@pytest.fixture
def run(done, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(done, dst)
    return dst


def _settings(run: Path) -> dict:
    return json.loads((run / "compress.json").read_text())["settings"]


def _seal(run: Path, stage: str) -> str | None:
    return json.loads((run / C.STAGES[stage]).read_text())["seal"]["sha256"] if stage else None


def _forge(run: Path, stage: str, before: str | None, edit, files=()) -> None:
    """Re-seal an edited stage record as an attacker who knows the format would."""
    record = {k: v for k, v in json.loads((run / C.STAGES[stage]).read_text()).items() if k != "seal"}
    edit(record)
    write_stage(run, stage, record, _settings(run), files=files, after=_seal(run, before))


def _again(run: Path, capsys) -> tuple[dict, str]:
    report = C.compress(tiny(), TARGET, run, **KW)
    return report, capsys.readouterr().err


def test_an_edited_allocation_is_redone(run, capsys):
    edit_json(run / "search.json", lambda d: d["allocation"].update({k: 0.0 for k in d["allocation"]}))
    report, err = _again(run, capsys)
    assert "search.json: its content does not match its seal (edited); redoing the search stage" in err
    assert report["rows"]["final"]["sparsity"] >= TARGET - 1e-3
    assert all(v > 0 for v in json.loads((run / "search.json").read_text())["allocation"].values())


def test_a_resealed_allocation_that_misses_the_target_is_redone(run, capsys):
    _forge(run, "search", None, lambda r: (r["allocation"].update({k: 0.0 for k in r["allocation"]}),
                                           r.update(counts=[0] * len(r["counts"]))))
    report, err = _again(run, capsys)
    assert f"its allocation does not meet the target {TARGET}; redoing the search stage" in err
    assert report["rows"]["final"]["sparsity"] >= TARGET - 1e-3


def test_a_swapped_model_file_is_re_exported(run, capsys):
    export(tiny().model, run / "model.prnn")  # the dense model where the compressed one was
    report, err = _again(run, capsys)
    assert "export.json: model.prnn is not the file the stage wrote" in err
    assert report["rows"]["final"]["bytes"] == (run / "model.prnn").stat().st_size
    assert report["rows"]["final"]["sparsity"] >= TARGET - 1e-3


def test_a_swapped_and_resealed_model_file_is_refused_by_the_report(run):
    export(tiny().model, run / "model.prnn")
    _forge(run, "export", "finetune", lambda r: None, files=["model.prnn"])
    (run / "report.json").unlink()
    with pytest.raises(C.CompressError, match="model.prnn is at sparsity 0.0000, below .* not the model this run"):
        C.compress(tiny(), TARGET, run, **KW)


def test_an_edited_report_is_recomputed_from_the_files(run, capsys):
    edit_json(run / "report.json", lambda d: d["rows"]["final"].update(bytes=1, sparsity=0.99))
    report, err = _again(run, capsys)
    assert "report.json: its content does not match its seal" in err
    assert report["rows"]["final"]["bytes"] == (run / "model.prnn").stat().st_size


def test_a_pickled_finetuned_file_never_runs(run, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    torch_payload(run / "finetuned.pt", marker)
    prove_live(marker, lambda: torch.load(run / "finetuned.pt", weights_only=False))
    _forge(run, "finetune", "search", lambda r: None, files=["finetuned.pt"])  # even re-sealed
    (run / "export.json").unlink()
    report, err = _again(run, capsys)
    assert "finetuned.pt is not a fine-tuned state dict of this model (UnpicklingError); redoing" in err
    assert not marker.exists()
    assert report["rows"]["final"]["sparsity"] >= TARGET - 1e-3


def test_a_stage_of_other_settings_is_redone(run, capsys):
    def other(d):
        d["seal"]["settings"]["seed"] = 7
    edit_json(run / "finetune.json", other)
    _, err = _again(run, capsys)
    assert "finetune.json: its content does not match its seal" in err or "other settings" in err
    # every stage after a redone one is redone too
    assert "export.json: it followed another run of the stage before it" in err


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    import prune_env.io

    calls = {"n": 0}
    real = os.fsync

    def full(fd):
        calls["n"] += 1
        if calls["n"] >= 3:  # compress.json and search.json fit; the disk fills on the fine-tuned weights
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(prune_env.io.os, "fsync", full)
    out = tmp_path / "run"
    assert main(["compress", "--task", SPEC, "--sparsity", str(TARGET), "--agent", "uniform", "--steps", "2",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "prune-rnn: error: [Errno 28] No space left on device"
    assert "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert not (out / "finetuned.pt").exists() and not (out / "finetune.json").exists()
    monkeypatch.undo()
    assert main(["compress", "--task", SPEC, "--sparsity", str(TARGET), "--agent", "uniform", "--steps", "2",
                 "--out", str(out), "--no-progress"]) == 0  # and the run then finishes from its last stage


def test_a_model_that_cannot_be_exported_is_refused_before_the_first_stage(tmp_path, capsys):
    task = tiny()
    task.model.act = lambda x: x  # an attribute no data-only description holds
    # hidden units: a weights-only file could not be loaded into the user's (larger) model, so nothing can be written
    with pytest.raises(C.CompressError, match="cannot be exported, so compress would fail at its third stage: "
                                              "cannot export `act`"):
        C.compress(task, 0.5, tmp_path / "run", granularity="hidden_unit", **KW)
    assert not (tmp_path / "run" / "search.json").exists()
    # unstructured: the tensors alone are written, with a warning saying how to load them; never the attribute
    report = C.compress(task, TARGET, tmp_path / "w", **KW)
    assert "weights-only" in capsys.readouterr().err and "model=" in report["load"]
