"""``prune-rnn``: smoke runs of every command on a tiny custom task (and the small ``digits`` preset), the one-line
errors, the statistics behind the README, and the run metadata (taken at start; dirty trees flagged)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from tiny import bf16_available

import agents.cli.bench
import agents.core.results
from agents.cli.main import main
from agents.core.results import DIRTY_NOTE, git_state, provenance, run_meta, summarize

TINY = "tiny:tiny_task"  # tests/tiny.py is importable under pytest: no preset training in CI
#: bf16 where this CPU has a bf16 GRU kernel (the tiny task is a GRU), else fp32 (the env would refuse bf16)
PRECISION = "bf16" if bf16_available("GRU") else "fp32"
ROOT = Path(__file__).resolve().parent.parent


def test_tasks_lists_presets(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "pydoc-char" in out


def test_bench_writes_results_and_never_overwrites(tmp_path, capsys):
    argv = ["bench", "--task", TINY, "--sparsity", "0.5", "0.7", "--agents", "uniform", "global", "random",
            "reinforce", "--max-evals", "4", "--seeds", "0", "1", "--out", str(tmp_path), "--no-progress"]
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
    assert "git_dirty" in meta and datetime.fromisoformat(meta["started"]) and meta["machine"]["torch_threads"] >= 1
    assert len(data["runs"]) == 2 * (2 * 2 + 2)  # uniform and global are deterministic: run once per sparsity
    assert all(r["evals"] <= 4 and r["mode"] == "joint" and r["device"] == "cpu" for r in data["runs"])
    assert {(s["agent"], s["target_sparsity"]) for s in data["summary"]} == {
        (a, t) for a in ("uniform", "global", "random", "reinforce") for t in (0.5, 0.7)}
    lines = (runs[0] / "results.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 12 and lines[0].startswith("task,agent,target_sparsity")
    out = capsys.readouterr().out
    assert "reinforce" in out and "results:" in out


def test_train_then_evaluate_allocation_and_policy(tmp_path, capsys):
    assert main(["train", "--task", TINY, "--sparsity", "0.6", "--agent", "reinforce", "--max-evals", "6",
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
    assert main(["train", "--task", TINY, "--sparsity", "0.6", "--agent", "ppo", "--max-evals", "8", "--out",
                 str(tmp_path), "--no-progress", "--vector-envs", "2", "--precision", PRECISION,
                 "--option", "ppo.n_epochs=1"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    row = json.loads((run / "result.json").read_text())["result"]
    assert row["precision"] == PRECISION and row["evals"] == 8
    assert main(["evaluate", "--task", TINY, "--policy", str(run / "policy.zip"), "--sparsity", "0.6"]) == 0


@pytest.mark.parametrize("argv, match", [
    (["bench", "--task", "no-such-task"], "--task: unknown task"),
    (["bench", "--task", TINY, "--agents", "alphazero"], "unknown agent"),
    (["bench", "--task", TINY, "--sparsity", "1.0"], "--sparsity"),
    (["bench", "--task", TINY, "--sparsity", "-0.1"], "--sparsity"),
    (["bench", "--task", "./missing/corpus"], "corpus directory not found"),
    (["bench", "--task", "corpus"], "corpus directory"),
    (["bench", "--task", TINY, "--max-evals", "0"], "--max-evals must be >= 1"),
    (["bench", "--task", TINY, "--max-evals", "3", "--budget", "4"], "disagree"),
    (["bench", "--task", TINY, "--seeds", "-1"], "seeds"),
    (["bench", "--task", TINY, "--option", "reinforce"], "AGENT.KEY=VALUE"),
    (["bench", "--task", TINY, "--agents", "random", "--option", "reinforce.lr=1"], "not being run"),
    (["train", "--task", TINY], "--sparsity"),
    (["evaluate", "--task", TINY, "--allocation", "nope.json"], "file not found"),
    (["evaluate", "--task", TINY, "--allocation", "a.json", "--finetune-steps", "-1"], "--finetune-steps"),
    (["evaluate", "--task", TINY, "--allocation", "a.json", "--device", "gpu0"], "unknown device"),
    (["train", "--task", TINY, "--sparsity", "0.5", "--device", "nonsense"], "unknown device"),
    pytest.param(["bench", "--task", TINY, "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    (["bench", "--task", TINY, "--mode", "parallel"], "--mode"),
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


@pytest.mark.parametrize("module", ["agents.cli", "agents.cli.main"])
def test_python_m_exit_code_and_one_line(module):
    proc = subprocess.run([sys.executable, "-m", module, "bench", "--task", "no-such-task"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("prune-rnn: error: --task: unknown task")


@pytest.mark.parametrize("module", ["agents.cli", "agents.cli.main"])
def test_python_m_agents_cli_runs(module):
    proc = subprocess.run([sys.executable, "-m", module, "tasks"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "digits" in proc.stdout, proc.stderr
    assert proc.stderr == ""  # no runpy warning about a module imported twice


def test_console_script_names_the_package_main():
    import tomllib

    import agents.cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"prune-rnn": "agents.cli:main"}
    assert agents.cli.main(["bench", "--task", "no-such-task"]) == 2
    import agents.cli.main as module  # the submodule shadows the function's name, and runs the CLI too

    assert module(["bench", "--task", "no-such-task"]) == 2


def test_budget_is_a_deprecated_alias_of_max_evals(tmp_path, capsys):
    assert main(["train", "--task", TINY, "--sparsity", "0.5", "--agent", "random", "--budget", "3",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "--budget" in line] == [
        "prune-rnn: warning: --budget is deprecated and will be removed in the next release; use --max-evals"]
    (run,) = tmp_path.iterdir()
    row = json.loads((run / "result.json").read_text())["result"]
    assert row["max_evals"] == 3 and row["evals"] == 3 and "budget" not in row


def test_import_prune_env_pulls_in_neither_agents_nor_sb3():
    code = ("import prune_env, sys; bad = [m for m in ('agents', 'stable_baselines3') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------- options on the digits preset
def _evaluate_row(out: str) -> dict[str, float]:
    """The numbers of ``evaluate``'s one-row table."""
    header = next(line for line in out.splitlines() if "test score" in line)
    row = next(line for line in out.splitlines() if re.search(r"\d\.\d{4}", line))
    cols = [c.strip() for c in re.split(r"[┃│|]", header) if c.strip()]
    vals = [float(c) for c in re.split(r"[┃│|]", row) if c.strip()]
    return dict(zip(cols, vals))


def test_evaluate_finetune_steps_fine_tunes_with_masks_held(tmp_path, capsys):
    # 80 % uniform: 40 steps take digits from ~0.10 to ~0.55 validation accuracy on AVX-512 and AVX2 CPUs alike (at
    # 90 % the recovery after 40 steps depends on the CPU the model was trained on: 0.18 -> 0.26, or 0.12 -> 0.10)
    assert main(["train", "--task", "digits", "--sparsity", "0.8", "--agent", "uniform", "--max-evals", "1",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    capsys.readouterr()
    evaluate = ["evaluate", "--task", "digits", "--allocation", str(run / "allocation.json")]
    assert main(evaluate) == 0
    before = _evaluate_row(capsys.readouterr().out)
    assert main([*evaluate, "--finetune-steps", "40"]) == 0
    after = _evaluate_row(capsys.readouterr().out)
    assert after["val score"] > before["val score"] + 0.1, (before, after)
    assert after["test score"] != before["test score"]
    # the pruned weights stay pruned: same sparsity, same exported size
    for key in ("sparsity", "nonzero params", "size bytes (fp32)"):
        assert after[key] == before[key], key


def test_bench_mode_sequential_builds_sequential_envs(tmp_path):
    assert main(["bench", "--task", "digits", "--mode", "sequential", "--sparsity", "0.8", "--agents", "uniform",
                 "random", "reinforce", "--max-evals", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = json.loads((run / "results.json").read_text())
    assert [r["mode"] for r in data["runs"]] == ["sequential"] * 3
    assert all(1 <= r["evals"] <= 3 and len(r["history"]) == r["evals"] for r in data["runs"])
    assert all(abs(r["achieved_sparsity"] - 0.8) < 1e-3 for r in data["runs"])


def test_train_device_cpu_and_mode_are_the_envs(tmp_path):
    assert main(["train", "--task", "digits", "--sparsity", "0.8", "--agent", "random", "--max-evals", "2",
                 "--device", "cpu", "--mode", "sequential", "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    res = json.loads((run / "result.json").read_text())
    assert res["result"]["device"] == "cpu" and res["result"]["mode"] == "sequential"
    assert res["meta"]["mode"] == "sequential" and res["result"]["evals"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_device_cuda(tmp_path):
    assert main(["train", "--task", "digits", "--sparsity", "0.8", "--agent", "random", "--max-evals", "2",
                 "--device", "cuda", "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    res = json.loads((run / "result.json").read_text())
    assert res["result"]["device"].startswith("cuda") and res["meta"]["machine"]["gpu"]


# ------------------------------------------------------------------------------------------- summarize
def _row(agent, seed, test, val, history, target=0.5, alloc=(0.5, 0.5)):
    return {"agent": agent, "target_sparsity": target, "seed": seed, "test_score": test, "val_score": val,
            "achieved_sparsity": target, "nonzero_params": 100 + seed, "evals": len(history),
            "wall_time_s": 1.0 + seed, "history": history, "allocation": {"a": alloc[0], "b": alloc[1]}}


def test_summarize_statistics_on_hand_made_rows():
    rows = [_row("global", 0, 0.50, 0.60, [0.60]),
            _row("random", 0, 0.10, 0.70, [0.50, 0.70, 0.70], alloc=(0.2, 0.8)),  # beats 0.60 at evaluation 2
            _row("random", 1, 0.20, 0.65, [0.65], alloc=(0.4, 0.6)),  # at 1
            _row("random", 2, 0.60, 0.61, [0.10, 0.20, 0.30, 0.61, 0.61], alloc=(0.6, 0.4)),  # at 4
            _row("reinforce", 0, 0.30, 0.90, [0.90]),
            _row("reinforce", 1, 0.30, 0.60, [0.55, 0.60]),  # equal is not better: never beats global
            _row("global", 0, 0.40, 0.20, [0.20], target=0.8),
            _row("random", 0, 0.30, 0.30, [0.10, 0.30], target=0.8)]  # at 2 (against 0.8's global, not 0.5's)
    s = {(r["agent"], r["target_sparsity"]): r for r in summarize(rows)}
    assert list(s) == [("global", 0.5), ("random", 0.5), ("reinforce", 0.5), ("global", 0.8), ("random", 0.8)]
    r = s["random", 0.5]
    assert r["seeds"] == 3
    assert r["test_mean"] == pytest.approx(0.3)
    assert r["test_std"] == pytest.approx((0.14 / 3) ** 0.5)  # ddof=0: sqrt(mean of (-0.2, -0.1, 0.3)^2)
    assert r["val_mean"] == pytest.approx(0.65333333) and r["val_std"] == pytest.approx(0.0368178, abs=1e-6)
    assert r["evals_to_beat_global"] == 2.0  # median of (2, 1, 4)
    assert r["evals"] == pytest.approx(3.0) and r["nonzero_params"] == pytest.approx(101.0)
    assert r["wall_time_s"] == pytest.approx(2.0)
    assert r["allocation"] == pytest.approx({"a": 0.4, "b": 0.6})
    assert s["reinforce", 0.5]["evals_to_beat_global"] is None  # one seed never beat it
    assert s["reinforce", 0.5]["test_std"] == 0.0
    assert s["global", 0.5]["evals_to_beat_global"] is None and s["global", 0.5]["test_std"] == 0.0
    assert s["random", 0.8]["evals_to_beat_global"] == 2.0
    # no global magnitude run at a target: nothing to beat
    assert summarize([_row("random", 0, 0.1, 0.9, [0.9])])[0]["evals_to_beat_global"] is None


# ------------------------------------------------------------------------------------------ run metadata
def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                           *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_state_flags_uncommitted_code_only(tmp_path):
    assert git_state(tmp_path) == (None, None)  # not a checkout
    repo = tmp_path / "repo"
    for f in ("prune_env/env.py", "agents/a.py", "benchmarks/b.py", "benchmarks/results/r.json", "README.md",
              "tests/t.py"):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("x\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    sha = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == (sha, False)
    assert git_state(repo / "agents") == (sha, False)  # from a subdirectory: pathspecs stay relative to the root
    for f in ("README.md", "tests/t.py", "benchmarks/results/r.json"):  # not code, or filed results
        (repo / f).write_text("changed\n")
    (repo / "benchmarks/results/new.json").write_text("{}\n")
    assert git_state(repo / "agents") == (sha, False)
    for change in ("prune_env/env.py", "benchmarks/b.py", "agents/new.py"):  # modified, modified, untracked
        path = repo / change
        old = path.read_text() if path.exists() else None
        path.write_text("y\n")
        assert git_state(repo / "agents") == (sha, True), change
        assert git_state(repo / "tests") == (sha, True), change
        path.write_text(old) if old is not None else path.unlink()
    assert git_state(repo) == (sha, False)
    (repo / "agents/a.py").write_text("staged\n")
    _git(repo, "add", "agents/a.py")
    assert git_state(repo) == (sha, True)


def test_run_meta_records_commit_dirty_flag_and_start(monkeypatch, capsys):
    # the checkout this code sits in, if it is one
    assert run_meta.__defaults__ and run_meta.__defaults__[0] == (ROOT if (ROOT / ".git").exists() else None)
    monkeypatch.setattr(agents.core.results, "git_state", lambda root=None: ("c" * 40, True))
    before = datetime.now().astimezone().replace(microsecond=0)
    meta = run_meta(["prune-rnn", "bench", "--task", "my task"])
    assert meta["command"] == "prune-rnn bench --task 'my task'"
    assert meta["git_commit"] == "c" * 40 and meta["git_dirty"] is True
    assert before <= datetime.fromisoformat(meta["started"]) <= datetime.now().astimezone()
    assert meta["machine"]["cpus"] >= 1 and meta["machine"]["torch_threads"] == torch.get_num_threads()
    assert meta["torch"] == torch.__version__ and meta["python"]
    err = capsys.readouterr().err
    assert "WARNING" in err and "UNCOMMITTED CHANGES" in err
    assert DIRTY_NOTE in provenance(meta)
    monkeypatch.setattr(agents.core.results, "git_state", lambda root=None: ("c" * 40, False))
    clean = run_meta("prune-rnn bench")
    assert clean["git_dirty"] is False and capsys.readouterr().err == ""
    assert DIRTY_NOTE not in provenance(clean) and "c" * 10 in provenance(clean)
    # filed results of the older format carried the flag in the commit
    legacy = provenance({"command": "x", "git_commit": "abc-dirty", "machine": {"cpus": 2}, "started": "2026-01-01"})
    assert DIRTY_NOTE in legacy and "recorded 2026-01-01" in legacy  # that time was taken when results were written
    assert f"started {clean['started']}" in provenance(clean)


def test_bench_meta_is_taken_at_start_and_a_dirty_tree_is_marked(tmp_path, monkeypatch, capsys):
    """The tree changes (a commit, an edit) while the search runs: the results keep the state it started from."""
    state = {"now": ("a" * 40, True)}
    monkeypatch.setattr(agents.core.results, "git_state", lambda root=None: state["now"])
    real_run_one, entered = agents.cli.bench.run_one, []

    def slow_run_one(*args, **kwargs):
        if not entered:
            entered.append(datetime.now().astimezone())
            state["now"] = ("b" * 40, False)
            time.sleep(1.2)  # "started" has whole seconds: a time taken after this is later than `entered`
        return real_run_one(*args, **kwargs)

    monkeypatch.setattr(agents.cli.bench, "run_one", slow_run_one)
    assert main(["bench", "--task", TINY, "--sparsity", "0.5", "--agents", "uniform", "global", "--max-evals", "2",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "UNCOMMITTED CHANGES" in err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((run / "results.json").read_text())["meta"]
    assert meta["git_commit"] == "a" * 40 and meta["git_dirty"] is True
    assert datetime.fromisoformat(meta["started"]) <= entered[0]
    assert meta["wall_time_s"] >= 1.2 and meta["complete"] is True
    assert DIRTY_NOTE in provenance(meta) and "a" * 10 in provenance(meta)


def test_train_from_a_clean_tree_warns_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(agents.core.results, "git_state", lambda root=None: ("d" * 40, False))
    assert main(["train", "--task", TINY, "--sparsity", "0.5", "--agent", "uniform", "--max-evals", "1",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((run / "result.json").read_text())["meta"]
    assert meta["git_commit"] == "d" * 40 and meta["git_dirty"] is False and meta["agent"] == "uniform"


def test_pretrain_selects_on_validation_and_writes_a_loadable_policy(tmp_path, capsys):
    from agents.policies.layerwise import load

    out = tmp_path / "policy.pt"
    argv = ["pretrain", "--tasks", "tiny:tiny_task", "tiny:tiny_lstm", "--val-tasks", "tiny:tiny_rnn",
            "--episodes", "32", "--rounds", "2", "--batch-size", "8", "--hidden", "8", "--out", str(out),
            "--tensorboard", str(tmp_path / "tb"), "--no-progress"]
    assert main(argv) == 0
    policy = load(out)
    assert policy.meta["train_tasks"] == ["tiny-gru", "tiny-lstm"] and policy.meta["validation_tasks"] == ["tiny-rnn"]
    assert [row["episodes"] for row in policy.meta["log"]] == [0, 16, 32]
    assert policy.meta["git_commit"] is None or len(policy.meta["git_commit"]) == 40
    scores = [row["validation"] for row in policy.meta["log"]]
    assert policy.meta["validation_zero_shot"] == max(scores)  # the selected policy is the best on validation
    assert any((tmp_path / "tb").iterdir())
    assert "selected after" in capsys.readouterr().out


def test_pretrain_reads_format_4_and_trains_on_the_chosen_operator(tmp_path):
    from agents.policies.layerwise import load

    out = tmp_path / "policy.pt"
    argv = ["pretrain", "--tasks", "tiny:tiny_calibrated", "--val-tasks", "tiny:tiny_calibrated", "--episodes", "8",
            "--rounds", "1", "--batch-size", "8", "--hidden", "8", "--observation-format", "4", "--criterion", "obs",
            "--reconstruct", "obs", "--pool", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    policy = load(out)
    assert policy.observation_format == 4 and policy.meta["observation_format"] == 4 and policy.pool
    assert policy.meta["operator"] == {"criterion": "obs", "reconstruct": "obs"}


def test_pretrain_checkpoint_resumes_and_refuses_another_run(tmp_path, capsys):
    from agents.policies.layerwise import load

    base = ["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_rnn", "--episodes", "16", "--rounds",
            "2", "--batch-size", "8", "--hidden", "8", "--checkpoint", str(tmp_path / "p.ckpt"), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a.pt")]) == 0
    assert (tmp_path / "p.ckpt").exists()
    assert main([*base, "--out", str(tmp_path / "b.pt")]) == 0  # finished: every round comes from the checkpoint
    a, b = load(tmp_path / "a.pt"), load(tmp_path / "b.pt")
    assert a.meta["log"] == b.meta["log"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    capsys.readouterr()
    assert main([*base, "--seed", "1", "--out", str(tmp_path / "c.pt")]) == 2
    err = capsys.readouterr().err  # (a dirty tree adds a warning line first)
    last = err.strip().splitlines()[-1]
    assert "--checkpoint" in last and "seed" in last and "Traceback" not in err


def test_pretrain_selection_set_joins_zoo_splits_in_order_each_model_once(monkeypatch):
    import prune_env.tasks.zoo as zoo
    from agents.cli.pretrain import zoo_tasks

    monkeypatch.setattr(zoo, "make_zoo_task", lambda name, progress=True: name)  # names, not trained models
    v1 = zoo.zoo_names("validation", available_only=True, version="v1")
    v2 = zoo.zoo_names("validation", available_only=True, version="v2")
    assert zoo_tasks(None, ["v1:validation"], "--validation", False) == v1
    assert zoo_tasks(None, "validation", "--validation", False) == v1
    assert zoo_tasks(None, ["v2:validation", "validation", "v1:validation"], "--validation", False) == v2 + v1
    assert zoo_tasks(["tiny:tiny_task"], ["v2:validation"], "--val-tasks", False)[0].name.startswith("tiny")


@pytest.mark.parametrize("argv, words", [
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--targets", "0.9", "0.5"],
     "LOW must not exceed"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--episodes", "0"], "--episodes"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--out", "/no/such/dir/p.pt"],
     "directory not found"),
    (["pretrain", "--tasks", "no-such-task", "--val-tasks", "tiny:tiny_task"], "unknown task"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--init-std", "0"], "--init-std"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--ema-decay", "1"], "--ema-decay"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--selection-targets", "1.2"],
     "--selection-targets must be in"),
    (["pretrain", "--zoo", "v9:train", "--val-tasks", "tiny:tiny_task"], "--zoo: zoo_names: unknown `version`"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--validation", "v2:dev"], "--validation: zoo_names: unknown `split`"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--validation", "v1:validation", "v2:dev"],
     "--validation: zoo_names: unknown `split`"),
    (["pretrain", "--tasks", "tiny:tiny_task", "--val-tasks", "tiny:tiny_task", "--criterion", "obs"],
     "--criterion/--reconstruct"),
])
def test_pretrain_bad_arguments_one_line_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_bench_resume_runs_only_the_missing_cells_and_ends_with_the_same_table(tmp_path, monkeypatch):
    """A bench killed after any finished cell, then resumed, ends with the uninterrupted table (deterministic
    agents and seeded searches alike), and recomputes no finished cell."""
    import agents.cli.bench as cli

    base = ["bench", "--task", TINY, "--sparsity", "0.6", "0.8", "--agents", "uniform", "lamp", "random",
            "--max-evals", "4", "--seeds", "0", "1", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    (full,) = (tmp_path / "full").iterdir()
    reference = json.loads((full / "results.json").read_text())
    keys = ("agent", "target_sparsity", "seed", "val_score", "test_score", "allocation", "history")

    def table(data):
        return [[r[k] for k in keys] for r in data["runs"]], [
            {k: v for k, v in s.items() if k not in ("wall_time_s",)} for s in data["summary"]]

    real = cli.run_one
    for kill_after in (1, 3, 4, 7):
        calls = []

        def dying(*a, _n=kill_after, _calls=calls, **k):
            if len(_calls) == _n:
                raise KeyboardInterrupt  # what a kill between two cells leaves: the finished ones on disk
            _calls.append(a[2:5])
            return real(*a, **k)

        monkeypatch.setattr(cli, "run_one", dying)
        parent = tmp_path / f"k{kill_after}"
        with pytest.raises(KeyboardInterrupt):
            main([*base, "--out", str(parent)])
        (run,) = parent.iterdir()
        assert len(json.loads((run / "results.json").read_text())["runs"]) == kill_after
        resumed = []
        monkeypatch.setattr(cli, "run_one", lambda *a, _r=resumed, **k: _r.append(a[2:5]) or real(*a, **k))
        assert main([*base, "--resume", str(run)]) == 0
        assert not set(resumed) & set(calls)  # no finished cell recomputed
        assert len(resumed) + kill_after == 8  # 2 targets x (uniform, lamp, random x 2 seeds)
        assert table(json.loads((run / "results.json").read_text())) == table(reference)


def test_bench_resume_refuses_another_bench(tmp_path, capsys):
    assert main(["bench", "--task", TINY, "--sparsity", "0.6", "--agents", "uniform", "--max-evals", "2",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = tmp_path.iterdir()
    assert main(["bench", "--task", TINY, "--sparsity", "0.6", "--agents", "uniform", "--max-evals", "3",
                 "--resume", str(run), "--no-progress"]) == 2
    assert "--resume: --max-evals 3 differs from the run's 2" in capsys.readouterr().err
    assert main(["bench", "--task", TINY, "--resume", str(tmp_path / "nothing")]) == 2
