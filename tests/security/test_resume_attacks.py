"""``prune-rnn bench --resume`` refuses to mix runs and never deletes a finished row silently: differing settings
are named, fewer cells need ``--drop``, a tampered fingerprint or row is refused, a factory named only by the file is
not imported, malformed files are one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from attack_tasks import SPEC, edit_json, evil_module

from agents.cli import main

BASE = ["bench", "--task", SPEC, "--sparsity", "0.5", "--agents", "uniform", "random", "--max-evals", "2",
        "--seeds", "0", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert main([*BASE, "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst


def _rows(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())["runs"]


def _refused(capsys, run: Path, before: bytes, *words: str) -> None:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("prune-rnn: error: --resume") and "Traceback" not in err, err
    for w in words:
        assert w in last, last
    assert (run / "results.json").read_bytes() == before, "a refused resume changed the results"


@pytest.mark.parametrize("extra, words", [
    (["--task-seed", "1"], "--task-seed 1 differs from the run's 0"),
    (["--mode", "sequential"], "--mode \"sequential\" differs from the run's \"joint\""),
    (["--precision", "bf16"], "--precision \"bf16\" differs"),
    (["--max-evals", "3"], "--max-evals 3 differs from the run's 2"),
    (["--budget", "3"], "--max-evals 3 differs"),
    (["--criterion", "saliency"], "--criterion \"saliency\" differs from the run's \"magnitude\""),
    (["--option", "random.batch_size=2"], "--option [\"random.batch_size=2\"] differs from the run's []"),
])
def test_a_differing_argument_is_refused_by_name(run, capsys, extra, words):
    before = (run / "results.json").read_bytes()
    assert main(["bench", "--task", SPEC, "--resume", str(run), *extra, "--no-progress"]) == 2
    _refused(capsys, run, before, words)


def test_resume_alone_uses_the_recorded_arguments_and_more_cells_are_added(run, capsys):
    before = _rows(run)
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--no-progress"]) == 0  # nothing to do
    assert _rows(run) == before
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--agents", "uniform", "random", "lamp",
                 "--sparsity", "0.5", "0.6", "--no-progress"]) == 0
    rows = _rows(run)
    assert rows[:2] == before  # finished rows kept as they were
    assert [(r["agent"], r["target_sparsity"]) for r in rows] == [
        ("uniform", 0.5), ("random", 0.5), ("lamp", 0.5), ("uniform", 0.6), ("random", 0.6), ("lamp", 0.6)]
    meta = json.loads((run / "results.json").read_text())["meta"]
    assert meta["args"]["agents"] == ["uniform", "random", "lamp"] and len(meta["resumes"]) == 2
    capsys.readouterr()
    assert main(["validate", str(run), "--task", SPEC]) == 0


def test_fewer_cells_are_refused_without_drop_and_dropped_loudly_with_it(run, capsys):
    before = (run / "results.json").read_bytes()
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--agents", "uniform", "--no-progress"]) == 2
    _refused(capsys, run, before, "--agents leave out 1 cell(s)", "random @ 0.5, seed 0", "--drop")
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--agents", "uniform", "--drop",
                 "--no-progress"]) == 0
    assert "--drop: removing 1 finished row(s)" in capsys.readouterr().err
    assert [r["agent"] for r in _rows(run)] == ["uniform"]


def test_a_factory_the_user_did_not_type_again_is_not_imported(run, capsys, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    spec = evil_module(run, "evil_resume", marker)
    edit_json(run / "results.json", lambda d: d["meta"]["args"].update(task=spec))
    before = (run / "results.json").read_bytes()
    monkeypatch.chdir(run)
    assert main(["bench", "--resume", ".", "--no-progress"]) == 2
    _refused(capsys, run, before, f"'{spec}' is code named by the results file", f"--task {spec}")
    assert not marker.exists() and "evil_resume" not in sys.modules


@pytest.mark.parametrize("field, value, words", [
    ("dense_hash", "sha256:" + "0" * 64, "dense_hash \"sha256:0000"),
    ("env", {"mode": "joint", "criterion": "saliency"}, "env.criterion \"saliency\" recorded, \"magnitude\" now"),
    ("versions", {"torch": "0.0"}, "versions.torch \"0.0\" recorded"),
])
def test_a_tampered_fingerprint_is_refused(run, capsys, field, value, words):
    def tamper(d):
        fp = d["meta"]["fingerprint"]
        fp[field] = {**fp[field], **value} if isinstance(value, dict) else value
    edit_json(run / "results.json", tamper)
    before = (run / "results.json").read_bytes()
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--no-progress"]) == 2
    _refused(capsys, run, before, "is another run", words)


@pytest.mark.parametrize("edit, words", [
    (lambda r: r["replay"].update(dense_hash="sha256:" + "1" * 64), "has dense model hash"),
    (lambda r: r.update(mode="sequential"), "has mode \"sequential\""),
    (lambda r: r.update(target_sparsity=0.55), "is not a cell of the run's arguments"),
])
def test_a_row_of_another_run_is_refused(run, capsys, edit, words):
    edit_json(run / "results.json", lambda d: edit(d["runs"][1]))
    before = (run / "results.json").read_bytes()
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--no-progress"]) == 2
    _refused(capsys, run, before, words)


@pytest.mark.parametrize("content", ["{", '{"runs": 3, "meta": {}}', '{"runs": [{"agent": 1}], "meta": {}}',
                                     '{"runs": [], "meta": {"args": {"task": 1}}}', '{"runs": [], "meta": {}}'])
def test_a_malformed_results_file_is_one_line(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(content)
    assert main(["bench", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prune-rnn: error: --resume") and "Traceback" not in err, err


def test_an_env_setting_added_since_the_run_resumes_at_its_default(run, capsys):
    edit_json(run / "results.json", lambda d: d["meta"]["fingerprint"]["env"].pop("max_sparsity"))
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--no-progress"]) == 0
    edit_json(run / "results.json", lambda d: d["meta"]["fingerprint"]["env"].update(max_sparsity=0.5))
    before = (run / "results.json").read_bytes()
    assert main(["bench", "--task", SPEC, "--resume", str(run), "--no-progress"]) == 2
    _refused(capsys, run, before, "env.max_sparsity 0.5 recorded, 0.98 now")
