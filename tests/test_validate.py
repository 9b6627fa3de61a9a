"""``prune-rnn validate``: a fresh bench re-scores clean; a tampered row, a changed dense model and rows without a
replay record are reported; bad input is one line and exit 2. Tiny custom task only (seconds)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch

from agents.cli.main import main
from prune_env import PruneRNNEnv
from prune_env.replay import model_hash, replay_record, rescore

TINY = "tiny:tiny_task"


def validate(run: Path, *more: str) -> int:
    """``prune-rnn validate RUN --task tiny:tiny_task``: the tiny task is code, imported only when named."""
    return main(["validate", str(run), "--task", TINY, *more])


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    """One tiny bench (two targets, a deterministic and a searching agent, two seeds: 6 rows); tests copy it."""
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--task", TINY, "--sparsity", "0.5", "0.7", "--agents", "uniform", "random", "--max-evals",
                 "3", "--seeds", "0", "1", "--out", str(out), "--no-progress"]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture
def run_dir(bench_dir, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(bench_dir, dst)
    return dst


def _edit(run: Path, fn) -> None:
    path = run / "results.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_rows_carry_a_replay_record_with_exact_counts(bench_dir):
    data = json.loads((bench_dir / "results.json").read_text())
    for r in data["runs"]:
        rp = r["replay"]
        assert rp["task"]["spec"] == TINY and rp["task"]["seed"] == 0
        assert rp["dense_hash"].startswith("sha256:") and len(rp["dense_hash"]) == 7 + 64
        assert rp["granularity"] == "unstructured" and rp["criterion"] == "magnitude" and rp["precision"] == "fp32"
        assert rp["target_sparsity"] == r["target_sparsity"] and rp["bits"] is None
        assert set(rp["versions"]) >= {"torch", "numpy", "gymnasium", "prune_env"}
        assert all(isinstance(c, int) for c in rp["pruned"].values())
        assert rp["pruned"] == {n: round(s * rp["units"][n]) for n, s in r["allocation"].items()}
        assert sum(rp["pruned"].values()) == int(r["target_sparsity"] * sum(rp["units"].values()) + 0.5)
    assert "replay" not in (bench_dir / "results.csv").read_text().splitlines()[0]


def test_fresh_bench_validates_clean(run_dir, capsys):
    assert validate(run_dir) == 0
    out = capsys.readouterr().out
    assert "6 rows, 6 passed, 0 mismatched" in out and "PASS" in out and "legacy" not in out


def test_tampered_test_score_is_caught_and_named(run_dir, capsys):
    def bump(d):
        d["runs"][2]["test_score"] += 0.05
    _edit(run_dir, bump)
    assert validate(run_dir) == 1
    out = capsys.readouterr().out
    label = "row 2 (random @ 0.5, seed 1)"
    assert f"{label}: test score differs by 0.05" in out
    assert "1 mismatched" in out and "FAIL" in out
    assert sum("MISMATCH" in line for line in out.splitlines()) == 1


def test_tampered_allocation_is_caught(run_dir, capsys):
    def swap(d):  # move pruning from one layer to another: the same total, another model
        a = d["runs"][0]["allocation"]
        a["emb.weight"], a["head.weight"] = 0.25, 0.5 + 0.25 * 72 / 96
    _edit(run_dir, swap)
    assert validate(run_dir) == 1
    out = capsys.readouterr().out
    assert "row 0 (uniform @ 0.5, seed 0): allocation disagrees with the replay counts in ['emb.weight', " \
           "'head.weight']" in out


def test_tampered_val_score_is_caught_within_a_tolerance(run_dir, capsys):
    def nudge(d):
        d["runs"][5]["val_score"] += 1e-3
    _edit(run_dir, nudge)
    assert validate(run_dir) == 1
    assert "row 5 (random @ 0.7, seed 1): validation score differs by 0.001" in capsys.readouterr().out
    # within the tolerance the re-score passes, but the table, the CSV and the history no longer agree with the row
    assert validate(run_dir, "--tolerance", "0.01") == 1
    out = capsys.readouterr().out
    assert "6 rows, 6 passed, 0 mismatched; 4 table difference(s)" in out
    assert "summary (random @ 0.7): val_mean 0.096875" in out
    assert "results.csv line 6 (random @ 0.7, seed 1): val_score '0.0874" in out
    assert "row 5 (random @ 0.7, seed 1): the last best-so-far score 0.0874" in out


def test_changed_dense_model_is_reported_as_such(run_dir, monkeypatch, capsys):
    # the same task spec now builds another dense model (another seed): every row names the dense model
    monkeypatch.setattr(tiny, "tiny_task", functools.partial(tiny.tiny_task, seed=1))
    assert validate(run_dir) == 1
    out = capsys.readouterr().out
    assert "6 mismatched (6 with a different dense model)" in out
    assert "row 0 (uniform @ 0.5, seed 0): dense model differs: hash sha256:" in out
    assert out.count("DENSE MODEL DIFFERS") == 6


def test_rows_without_replay_are_validated_from_legacy_fields(run_dir, capsys):
    def strip(d):
        for r in d["runs"]:
            del r["replay"]
    _edit(run_dir, strip)
    assert validate(run_dir) == 0
    out = capsys.readouterr().out
    assert "6 passed" in out and "6 validated from legacy fields" in out and " legacy " in out

    def tamper(d):
        d["runs"][1]["test_score"] = 0.99
    _edit(run_dir, tamper)
    assert validate(run_dir) == 1
    assert "row 1 (random @ 0.5, seed 0): test score differs" in capsys.readouterr().out


def test_legacy_dense_model_checked_through_dense_val(run_dir, capsys):
    def strip(d):
        for r in d["runs"]:
            del r["replay"]
            r["dense_val"] += 0.1
    _edit(run_dir, strip)
    assert validate(run_dir) == 1
    assert "row 0 (uniform @ 0.5, seed 0): dense model differs: dense val" in capsys.readouterr().out


def _with_metrics(nll: float):
    """``tiny:tiny_task`` whose metadata records dense metrics, as the presets' do."""
    def make():
        task = _TINY_TASK()
        task.metadata["dense_val_metrics"] = {"score": 0.5, "nll": nll}
        return task
    return make


_TINY_TASK = tiny.tiny_task


def test_legacy_dense_model_checked_through_the_task_metadata_metrics(run_dir, monkeypatch, capsys):
    # same accuracy, another NLL: a retrained dense model that a coarse dense score would not show
    def strip(d):
        for r in d["runs"]:
            del r["replay"]
        d["meta"]["task_metadata"] = {"dense_val_metrics": {"score": 0.5, "nll": 2.25}}
    _edit(run_dir, strip)
    monkeypatch.setattr(tiny, "tiny_task", _with_metrics(2.25))
    assert validate(run_dir) == 0
    capsys.readouterr()
    monkeypatch.setattr(tiny, "tiny_task", _with_metrics(2.5))
    assert validate(run_dir) == 1
    out = capsys.readouterr().out
    assert "row 0 (uniform @ 0.5, seed 0): dense model differs: dense val nll 2.25 filed, 2.5 now" in out
    assert "6 mismatched (6 with a different dense model)" in out


def test_train_result_validates(tmp_path, capsys):
    assert main(["train", "--task", TINY, "--sparsity", "0.6", "--agent", "random", "--max-evals", "2", "--out",
                 str(tmp_path), "--no-progress"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    capsys.readouterr()
    assert validate(run) == 0
    assert "1 rows, 1 passed" in capsys.readouterr().out


@pytest.mark.parametrize("setup, words", [
    (lambda p: None, "run directory not found"),
    (lambda p: p.mkdir(), "no results.json"),
    (lambda p: (p.mkdir(), (p / "results.json").write_text("{not json")), "not readable JSON"),
    (lambda p: (p.mkdir(), (p / "results.json").write_text('{"runs": []}')), "holds no result rows"),
    (lambda p: (p.mkdir(), (p / "results.json").write_text('{"runs": [{"agent": "x"}]}')), "row 0 lacks"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, setup, words):
    run = tmp_path / "run"
    setup(run)
    assert validate(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prune-rnn: error:") and words in err
    assert "Traceback" not in err


def test_bad_tolerance_is_exit_2(run_dir, capsys):
    assert validate(run_dir, "--tolerance", "-1") == 2
    assert "--tolerance" in capsys.readouterr().err


def test_model_hash_sees_every_weight_and_nothing_else():
    task = tiny.tiny_task()
    h = model_hash(task.model)
    assert h == model_hash(tiny.tiny_task().model)  # same weights, another object
    assert h != model_hash(tiny.tiny_task(seed=1).model)
    m = tiny.tiny_task().model
    with torch.no_grad():
        m.head.weight[0, 0] += 1e-7
    assert model_hash(m) != h
    m2 = tiny.tiny_task().model.to(torch.float64)
    assert model_hash(m2) != h  # dtype is part of it


def test_rescore_replays_an_episode_exactly():
    env = PruneRNNEnv(tiny.tiny_task(), target_sparsity=0.6, device="cpu")
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    counts = env.counts.copy()
    rec = replay_record(env, counts, task_spec=TINY, task_seed=0)
    fresh = PruneRNNEnv(tiny.tiny_task(), target_sparsity=0.6, device="cpu")
    val, test = rescore(fresh, np.array([rec["pruned"][n] for n in fresh.layer_names]))
    assert val == info["score"]
    assert test == tiny.tiny_task().test(env.pruned_model(env.allocation))
