"""The trained-model cache behind the presets: a pickled entry never runs, an entry copied under another key or with
edited weights is not used (retrained with a warning, or refused where nothing may be trained), and the bench checks
the dense model against the entry before its first cell."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from attack_tasks import prove_live, torch_payload

from prune_env.tasks import make_task
from prune_env.tasks.cache import CacheMissError, no_training

TINY = {"epochs": 1, "hidden": 4, "progress": False}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entry(cache: Path, seed: int) -> Path:
    task = make_task("digits", seed=seed, **TINY)
    return Path(task.metadata["cache_path"])


def _warned(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


def test_a_pickled_entry_never_runs(cache, tmp_path):
    path = _entry(cache, 0)
    marker = tmp_path / "MARKER"
    torch_payload(path, marker)
    prove_live(marker, lambda: torch.load(path, weights_only=False))
    with no_training(), pytest.raises(CacheMissError, match="unreadable"):
        make_task("digits", **TINY)
    messages = _warned(lambda: make_task("digits", **TINY))
    assert any("unreadable" in m and "retraining it" in m for m in messages)
    assert not marker.exists()


def test_an_entry_copied_under_another_key_is_not_used(cache):
    a, b = _entry(cache, 0), _entry(cache, 1)
    shutil.copy(b, a)  # seed 1's weights where seed 0's belong
    with no_training(), pytest.raises(CacheMissError, match="another key"):
        make_task("digits", **TINY)
    messages = _warned(lambda: make_task("digits", **TINY))
    assert any("another key" in m for m in messages)
    fresh = make_task("digits", **TINY)
    assert fresh.metadata["from_cache"] and fresh.metadata["model_hash"] != make_task("digits", seed=1, **TINY) \
        .metadata["model_hash"]


def test_edited_weights_are_not_used(cache):
    path = _entry(cache, 0)
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1.0
    torch.save(payload, path)
    with no_training(), pytest.raises(CacheMissError, match="SHA-256"):
        make_task("digits", **TINY)


def test_retraining_is_refused_where_nothing_may_be_trained(cache):
    _entry(cache, 0)
    before = {p: p.read_bytes() for p in cache.iterdir()}
    with no_training():
        assert make_task("digits", **TINY).metadata["from_cache"]
        with pytest.raises(CacheMissError, match="retraining is not allowed"):
            make_task("digits", retrain=True, **TINY)
        with pytest.raises(CacheMissError, match="not cached"):
            make_task("digits", seed=5, **TINY)
    assert {p: p.read_bytes() for p in cache.iterdir()} == before


def test_the_bench_refuses_a_dense_model_that_is_not_its_cache_entry(tmp_path, capsys, monkeypatch):
    """A task whose model changed after it was loaded from the cache (here: by a factory) is caught before the first
    cell, since the bench compares the model with the hash its entry recorded."""
    from agents.cli import main
    from prune_env import tasks

    real = tasks.make_task

    def tampered(*a, **k):
        task = real(*a, **k)
        with torch.no_grad():
            next(task.model.parameters()).add_(1.0)
        return task

    monkeypatch.setattr(tasks, "make_task", tampered)
    assert main(["bench", "--task", "digits", "--agents", "uniform", "--max-evals", "1", "--out",
                 str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not the one its cache entry recorded" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
