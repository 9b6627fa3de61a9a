"""``prune-rnn``: smoke runs of every command on a tiny custom task, and the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prune_env.cli import main

TINY = "tiny:tiny_task"  # tests/tiny.py is importable under pytest: no preset training in CI


def test_tasks_lists_presets(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "pydoc-char" in out


def test_bench_writes_results_and_never_overwrites(tmp_path, capsys):
    argv = ["bench", "--task", TINY, "--sparsity", "0.5", "0.7", "--agents", "uniform", "global", "random",
            "reinforce", "--budget", "4", "--seeds", "0", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 0
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2, "the second run must get its own directory"
    for run in runs:
        for name in ("results.json", "results.csv", "pareto.png", "allocation.png"):
            assert (run / name).stat().st_size > 0, name
        assert not list(run.glob("*.tmp"))
    data = json.loads((runs[0] / "results.json").read_text())
    meta = data["meta"]
    assert meta["command"].startswith("prune-rnn bench") and meta["torch"] and "wall_time_s" in meta
    assert "git_commit" in meta and meta["machine"]["cpus"] >= 1 and meta["complete"] is True
    assert len(data["runs"]) == 2 * (2 * 2 + 2)  # uniform and global are deterministic: run once per sparsity
    assert all(r["evals"] <= 4 for r in data["runs"])
    assert {(s["agent"], s["target_sparsity"]) for s in data["summary"]} == {
        (a, t) for a in ("uniform", "global", "random", "reinforce") for t in (0.5, 0.7)}
    lines = (runs[0] / "results.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 12 and lines[0].startswith("task,agent,target_sparsity")
    out = capsys.readouterr().out
    assert "reinforce" in out and "results:" in out


def test_train_then_evaluate_allocation_and_policy(tmp_path, capsys):
    assert main(["train", "--task", TINY, "--sparsity", "0.6", "--agent", "reinforce", "--budget", "6",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run / "policy.pt").is_file() and (run / "allocation.json").is_file()
    alloc = json.loads((run / "allocation.json").read_text())
    assert alloc["target_sparsity"] == 0.6 and alloc["allocation"]
    capsys.readouterr()
    assert main(["evaluate", "--task", TINY, "--allocation", str(run / "allocation.json")]) == 0
    assert "test score" in capsys.readouterr().out
    assert main(["evaluate", "--task", TINY, "--policy", str(run / "policy.pt"), "--sparsity", "0.6"]) == 0


def test_train_ppo_saves_zip_policy(tmp_path):
    # also the batched vector env (--vector-envs) and bf16 scoring (--precision)
    assert main(["train", "--task", TINY, "--sparsity", "0.6", "--agent", "ppo", "--budget", "8", "--out",
                 str(tmp_path), "--no-progress", "--vector-envs", "2", "--precision", "bf16",
                 "--option", "ppo.n_epochs=1"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    row = json.loads((run / "result.json").read_text())["result"]
    assert row["precision"] == "bf16" and row["evals"] == 8
    assert main(["evaluate", "--task", TINY, "--policy", str(run / "policy.zip"), "--sparsity", "0.6"]) == 0


@pytest.mark.parametrize("argv, match", [
    (["bench", "--task", "no-such-task"], "unknown --task"),
    (["bench", "--task", TINY, "--agents", "alphazero"], "unknown agent"),
    (["bench", "--task", TINY, "--sparsity", "1.0"], "--sparsity"),
    (["bench", "--task", TINY, "--sparsity", "-0.1"], "--sparsity"),
    (["bench", "--task", "./missing/corpus"], "corpus directory not found"),
    (["bench", "--task", "corpus"], "corpus directory"),
    (["bench", "--task", TINY, "--budget", "0"], "budget"),
    (["bench", "--task", TINY, "--seeds", "-1"], "seeds"),
    (["bench", "--task", TINY, "--option", "reinforce"], "AGENT.KEY=VALUE"),
    (["bench", "--task", TINY, "--agents", "random", "--option", "reinforce.lr=1"], "not being run"),
    (["train", "--task", TINY], "--sparsity"),
    (["evaluate", "--task", TINY, "--allocation", "nope.json"], "file not found"),
    (["bench", "--sparsity", "lots"], "invalid float"),
    (["bench", "--task", TINY, "--precision", "fp16"], "--precision"),
    ([], "choose a command"),
])
def test_bad_arguments_one_line_exit_2(argv, match, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path)] if argv and argv[0] in ("bench", "train") else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert match in err
    assert not list(tmp_path.iterdir()), "a failed command must not create a run directory"


def test_console_script_exit_code():
    proc = subprocess.run([sys.executable, "-m", "prune_env.cli", "bench", "--task", "no-such-task"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
