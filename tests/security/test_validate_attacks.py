"""``prune-rnn validate`` on crafted and tampered run directories: it imports nothing a results file names, never
puts the current directory on ``sys.path``, writes nothing without ``--train-missing``, and fails on any table that
its rows do not give, naming the cell. The stand-in for code run is a marker file that must never appear."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from attack_tasks import SPEC, edit_json, evil_module

from agents.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--task", SPEC, "--sparsity", "0.5", "0.7", "--agents", "uniform", "random",
                 "--max-evals", "2", "--seeds", "0", "1", "--out", str(out), "--no-progress"]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture
def run(bench, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(bench, dst)
    return dst


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "code named by a file ran"


def _validate(run: Path, *more: str) -> int:
    return main(["validate", str(run), *more])


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prune-rnn: error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_the_run_validates_when_its_task_is_named(run, capsys):
    assert _validate(run, "--task", SPEC) == 0
    assert "6 rows, 6 passed" in capsys.readouterr().out


def test_a_factory_named_only_by_the_file_is_not_imported(run, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "attack_tasks", raising=False)
    assert _validate(run) == 2
    _one_line(capsys, "'attack_tasks:tiny' is not imported", f"--task {SPEC}")
    assert "attack_tasks" not in sys.modules


def test_a_module_shipped_in_the_run_directory_never_runs(run, marker, capsys, monkeypatch):
    """The downloaded run names its own module; validating from inside the directory imports nothing."""
    spec = evil_module(run, "evil_factory", marker)

    def point(d):
        for r in d["runs"]:
            r["replay"]["task"]["spec"] = spec
    edit_json(run / "results.json", point)
    monkeypatch.chdir(run)
    assert _validate(Path(".")) == 2
    _one_line(capsys, "is not imported")
    # even when the user names it, the current directory is not put on sys.path
    assert _validate(Path("."), "--task", spec) == 2
    _one_line(capsys, "cannot import")
    assert not {str(run), ".", ""} & set(sys.path)


def test_a_legacy_command_naming_a_module_is_not_imported(run, marker, capsys, monkeypatch):
    spec = evil_module(run, "evil_legacy", marker)

    def legacy(d):
        d["meta"]["command"] = f"prune-rnn bench --task {spec} --sparsity 0.5 0.7 --agents uniform random"
        d["meta"].pop("args", None)
        for r in d["runs"]:
            del r["replay"]
    edit_json(run / "results.json", legacy)
    monkeypatch.chdir(run)
    assert _validate(Path(".")) == 2
    _one_line(capsys, "'evil_legacy:make' is not imported")


def test_a_recorded_config_cannot_ask_for_retraining(run, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(cache))

    def retrain(d):
        for r in d["runs"]:
            r["replay"]["task"].update(spec="digits", preset="digits", config={"epochs": 1, "retrain": True},
                                       metadata_seed=0)
    edit_json(run / "results.json", retrain)
    assert _validate(run) == 2
    _one_line(capsys, "['retrain']", "not config knobs")
    assert not cache.exists(), "validate wrote to the cache"


def test_a_missing_dense_model_is_not_trained_without_the_flag(run, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(cache))

    def digits(d):
        for r in d["runs"]:
            r["replay"]["task"].update(spec="digits", preset="digits", config={"epochs": 1, "hidden": 4},
                                       metadata_seed=0)
    edit_json(run / "results.json", digits)
    assert _validate(run) == 2
    _one_line(capsys, "not cached", "--train-missing")
    assert not cache.exists()
    # with the flag it trains (and caches) the model; the rows, of another task, then fail to match
    assert _validate(run, "--train-missing") == 1
    assert list(cache.glob("digits-*.pt"))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["summary"][0].update(test_mean=0.99), "summary (uniform @ 0.5): test_mean 0.99 filed"),
    (lambda d: d["runs"].pop(1), "row count: 5 rows, the run's arguments name 6 cells; missing random @ 0.5, seed 0"),
    (lambda d: d["runs"][1].update(evals=1), "row 1 (random @ 0.5, seed 0): evals 1 but 2 history entries"),
    (lambda d: d["runs"][1]["history"].append(0.9), "evals 2 but 3 history entries"),
    (lambda d: d["runs"].append(dict(d["runs"][0])), "row 6 (uniform @ 0.5, seed 0): the same cell as row 0"),
])
def test_tables_that_the_rows_do_not_give_fail_naming_the_cell(run, capsys, edit, words):
    edit_json(run / "results.json", edit)
    assert _validate(run, "--task", SPEC) == 1
    out = capsys.readouterr().out
    assert words in out and "FAIL" in out


def test_an_edited_csv_fails_naming_the_line(run, capsys):
    path = run / "results.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    rows[2]["test_score"] = "0.999"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())
    assert _validate(run, "--task", SPEC) == 1
    assert "results.csv line 3 (random @ 0.5, seed 1): test_score '0.999'" in capsys.readouterr().out
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    assert _validate(run, "--task", SPEC) == 1
    assert "results.csv: 5 lines, but results.json has 6 rows" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["[]", '{"runs": {"a": 1}}', '{"runs": [1, 2]}', "\u0000\u00ff", '{"runs": [{'
                                     '"agent": 1, "target_sparsity": "x", "val_score": 0, "test_score": 0, '
                                     '"allocation": {}, "replay": {"task": "x"}}]}'])
def test_malformed_results_are_one_line(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(content)
    assert _validate(run) == 2
    _one_line(capsys)


def test_validate_writes_nothing(run, capsys):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert _validate(run, "--task", SPEC) == 0
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert json.loads((run / "results.json").read_text())["meta"]["complete"] is True
