"""``prune-rnn bench --backend ray``: the same results rows as the local backend, to the last digit (deterministic
agents and seeded searches alike), ``--resume`` across backends, and the one-line error without the Ray extra
(the only test here that runs without ``pip install -e ".[ray]"``)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from agents.cli.main import main

HERE = Path(__file__).resolve().parent
TINY = "tiny:tiny_task"  # tests/tiny.py: on the Ray workers' PYTHONPATH too (this process's sys.path)
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='needs the ray extra: pip install -e ".[ray]"')
KEYS = ("task", "agent", "target_sparsity", "seed", "max_evals", "val_score", "test_score", "dense_val",
        "achieved_sparsity", "nonzero_params", "evals", "allocation", "history", "replay")
BASE = ["bench", "--task", TINY, "--sparsity", "0.6", "0.8", "--agents", "uniform", "global", "lamp", "random",
        "--max-evals", "4", "--seeds", "3", "--no-progress"]


def _rows(run: Path) -> list[list]:
    data = json.loads((run / "results.json").read_text())
    assert data["meta"]["complete"] is True
    return [[r[k] for k in KEYS] for r in data["runs"]]


def _summary(run: Path) -> list[dict]:
    return [{k: v for k, v in s.items() if "wall_time" not in k}
            for s in json.loads((run / "results.json").read_text())["summary"]]


@pytest.fixture(scope="module")
def ray_cli():
    """Ray started (and stopped) by the bench itself, on the loopback address."""
    if "ray" not in sys.modules:  # read when ray is imported: Linux nodes then use 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    yield ray
    assert not ray.is_initialized(), "the bench must shut down the Ray instance it started"


@needs_ray
def test_ray_backend_rows_equal_the_local_backend(ray_cli, tmp_path):
    assert main([*BASE, "--backend", "local", "--out", str(tmp_path / "local")]) == 0
    assert main([*BASE, "--backend", "ray", "--out", str(tmp_path / "ray")]) == 0
    (local,) = (tmp_path / "local").iterdir()
    (remote,) = (tmp_path / "ray").iterdir()
    rows = _rows(local)
    assert len(rows) == 2 * 4 and {r[1] for r in rows} == {"uniform", "global", "lamp", "random"}
    assert _rows(remote) == rows  # every score, allocation and history: ==, not approximately
    assert _summary(remote) == _summary(local)
    for name in ("results.csv", "pareto.png", "allocation.png"):
        assert (remote / name).stat().st_size > 0
    assert not list(remote.glob("*.tmp"))


@needs_ray
def test_ray_backend_resumes_a_local_bench(ray_cli, tmp_path, monkeypatch):
    """A local bench killed after 3 cells, finished with --backend ray: the local table, finished cells kept."""
    import agents.cli.bench as cli

    assert main([*BASE, "--out", str(tmp_path / "full")]) == 0
    (full,) = (tmp_path / "full").iterdir()
    real, calls = cli.run_one, []

    def dying(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(a[2:5])
        return real(*a, **k)

    monkeypatch.setattr(cli, "run_one", dying)
    with pytest.raises(KeyboardInterrupt):
        main([*BASE, "--out", str(tmp_path / "part")])
    (run,) = (tmp_path / "part").iterdir()
    monkeypatch.setattr(cli, "run_one", real)
    assert main([*BASE, "--backend", "ray", "--resume", str(run)]) == 0
    assert _rows(run) == _rows(full)


@needs_ray
def test_ray_backend_reports_a_bad_task_option_in_one_line(ray_cli, tmp_path, capsys):
    """An error raised in a worker (here an unknown agent option) stops the bench with the local backend's line."""
    argv = ["bench", "--task", TINY, "--sparsity", "0.6", "--agents", "random", "--max-evals", "2", "--no-progress",
            "--option", "random.no_such_option=1", "--out", str(tmp_path)]
    local = main([*argv, "--backend", "local"])
    err_local = capsys.readouterr().err
    assert main([*argv, "--backend", "ray"]) == local
    if local == 2:
        assert capsys.readouterr().err == err_local


@pytest.mark.skipif(HAVE_RAY, reason="checks the error printed without the ray extra")
def test_ray_backend_without_the_extra_is_one_line(tmp_path, capsys):
    assert main(["bench", "--task", TINY, "--agents", "uniform", "--max-evals", "2", "--backend", "ray",
                 "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install -e ".[ray]"' in err
    assert not list(tmp_path.iterdir())  # refused before any run directory


def test_address_needs_the_ray_backend(tmp_path, capsys):
    assert main(["bench", "--task", TINY, "--agents", "uniform", "--max-evals", "2", "--address", "auto",
                 "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
