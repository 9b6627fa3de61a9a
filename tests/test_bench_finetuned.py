"""benchmarks/finetuned.py: the dense control stays out of the allocation comparison; a tiny run resumes."""

from __future__ import annotations

import json

import pytest

from benchmarks import finetuned as bench_finetuned


def _cell(agent, ft, one=0.1, target=0.9, seed=0):
    return {"agent": agent, "target": target, "seed": seed, "oneshot_test": one, "ft_test": ft, "ft_val": ft,
            "ft_test_perplexity": None}


def test_dense_control_is_not_a_searched_allocation():
    cells = [_cell("dense", 0.99, one=0.95), _cell("uniform", 0.50, one=0.1), _cell("lamp", 0.60, one=0.3),
             _cell("erk", 0.55, one=0.2)]
    s = bench_finetuned.summarize(cells, ["dense", "uniform", "lamp", "erk"], [0.9])
    assert s["margin_over_uniform"][0.9] == {"best": "lamp", "margin": pytest.approx(0.10)}
    # Spearman over the three pruned allocations only (with the control it would not be 1)
    assert s["spearman"][0.9] == pytest.approx(1.0)
    assert [r["agent"] for r in s["rows"]] == ["dense", "uniform", "lamp", "erk"]


def test_tiny_run_with_control_and_resume(tmp_path, monkeypatch):
    argv = ["--task", "digits", "--targets", "0.8", "--seeds", "0", "--agents", "dense", "uniform", "lamp",
            "--steps", "4", "--lr-schedule", "cosine", "--out", str(tmp_path)]
    assert bench_finetuned.main(argv) == 0
    cells = [json.loads(x) for x in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert [c["agent"] for c in cells] == ["dense", "uniform", "lamp"]
    dense = cells[0]
    assert set(dense["allocation"].values()) == {0.0} and dense["evals"] == 0
    assert cells[1]["oneshot_test"] < dense["oneshot_test"]
    text = (tmp_path / "results.md").read_text()
    assert "cosine decay" in text and "the control" in text
    ran = []
    monkeypatch.setattr(bench_finetuned, "_cell", lambda *a, **k: ran.append(a))
    assert bench_finetuned.main(argv) == 0
    assert ran == []


def test_control_alone_has_no_correlation_or_margin():
    s = bench_finetuned.summarize([_cell("dense", 0.2, one=0.14)], ["dense"], [0.9])
    assert s["spearman"] == {} and s["margin_over_uniform"] == {}
    result = {"args": {"agents": ["dense"], "targets": [0.9], "steps": 10, "lr": 1e-3, "seeds": [0]},
              "summary": s, "task": "t", "dense_test": 0.14, "meta": {"command": "x"}}
    md = bench_finetuned.to_markdown(result)
    assert "| 0.9 | dense |" in md and "Spearman" not in md
