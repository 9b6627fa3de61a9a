"""Task specs filed in results resolve to installed presets without importing anything; the ``custom-gru`` preset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from prune_env.tasks import PRESETS, SPEC_ALIASES, TaskError, custom_gru, make_task, resolve_spec, resolve_task

ROOT = Path(__file__).resolve().parent.parent
GRU_RESULTS = ROOT / "benchmarks" / "results" / "agents_gru" / "results.json"


def test_aliases_name_installed_presets():
    assert SPEC_ALIASES["benchmarks.gru_task:make"] == ("custom-gru", {})
    assert all(preset in PRESETS for preset, _ in SPEC_ALIASES.values())
    assert resolve_spec("benchmarks.gru_task:make") == ("custom-gru", {})
    assert resolve_spec("digits") == ("digits", {})
    assert resolve_spec("zoo-v1/gru-sines-2x96") == ("zoo-v1/gru-sines-2x96", {})


def test_ptb_alias_reads_the_data_directory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("PRUNE_RNN_PTB", raising=False)
    with pytest.raises(TaskError, match="PRUNE_RNN_PTB"):
        resolve_spec("benchmarks.ptb_task:make")
    monkeypatch.setenv("PRUNE_RNN_PTB", str(tmp_path))
    assert resolve_spec("benchmarks.ptb_task:make") == ("corpus", {"path": str(tmp_path), "steps": 6000})
    assert resolve_spec(str(tmp_path)) == ("corpus", {"path": str(tmp_path)})


@pytest.mark.parametrize("spec", ["benchmarks.other:make", "os:getcwd", "no-such-preset", "corpus"])
def test_resolve_spec_refuses_what_no_installed_task_names(spec):
    with pytest.raises(TaskError, match="not an installed preset"):
        resolve_spec(spec)


def test_an_alias_imports_nothing(monkeypatch):
    import importlib

    real = importlib.import_module

    def refuse(name, *args, **kwargs):
        assert not name.startswith("benchmarks"), f"imported {name}"
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", refuse)
    monkeypatch.delitem(sys.modules, "benchmarks.gru_task", raising=False)
    task = resolve_task("benchmarks.gru_task:make", epochs=1, progress=False)
    assert "benchmarks.gru_task" not in sys.modules
    assert task.name == "gru-digits-columns" and task.metadata["preset"] == "custom-gru"
    assert task.metadata["config"]["epochs"] == 1


def test_custom_gru_has_the_filed_layers_and_splits():
    task = make_task("custom-gru", epochs=1, progress=False)
    shapes = {n: p.numel() for n, p in task.model.named_parameters() if n.endswith("weight") or "weight_" in n}
    assert shapes == {"proj.weight": 256, "gru.weight_ih_l0": 6144, "gru.weight_hh_l0": 12288,
                      "gru.weight_ih_l0_reverse": 6144, "gru.weight_hh_l0_reverse": 12288, "head.weight": 1280}
    assert task.metadata["splits"] == {"train": 1077, "val": 360, "test": 360}
    assert task.loss is not None and task.train_loss is None  # the loss-aware rules' statistics as filed
    with pytest.raises(ValueError, match="unknown config"):
        make_task("custom-gru", hidden=3)


def test_custom_gru_seed_changes_split_and_weights():
    a = make_task("custom-gru", epochs=1, progress=False)
    b = make_task("custom-gru", seed=1, epochs=1, progress=False)
    assert not a.model.proj.weight.equal(b.model.proj.weight)
    assert not a.eval_batch[1].equal(b.eval_batch[1])


@pytest.mark.slow
def test_custom_gru_is_the_filed_dense_model():
    """The preset's seed-0 model has the dense hash recorded by the filed custom-GRU table, on a CPU of the kind the
    table was measured on (float results of training differ across CPU models)."""
    from agents.core.results import cpu_model
    from prune_env.replay import model_hash

    data = json.loads(GRU_RESULTS.read_text())
    if data["meta"]["machine"].get("cpu") != cpu_model():
        pytest.skip(f"filed on {data['meta']['machine'].get('cpu')}, this CPU is {cpu_model()}")
    task = make_task("custom-gru", progress=False)
    hashes = {r["replay"]["dense_hash"] for r in data["runs"]}
    assert hashes == {model_hash(task.model)}
    assert all(r["dense_val"] == pytest.approx(task.metadata["dense_val"]) for r in data["runs"])
    assert custom_gru.TASK_NAME == data["meta"]["task"]
