"""benchmarks/transfer.py's test report runs end to end on tiny models and resumes without recomputing a cell."""

from __future__ import annotations

import json

import pytest

from benchmarks import transfer as bench_transfer


def test_smoke_run_and_resume(tmp_path, monkeypatch):
    argv = ["test", "--smoke", "--out", str(tmp_path), "--seeds", "0", "1", "--targets", "0.8",
            "--methods", "lamp", "zero-shot", "few-shot-30", "random-100"]
    monkeypatch.setattr(bench_transfer, "METHODS", dict(bench_transfer.METHODS))
    assert bench_transfer.main(argv) == 0
    cells = [json.loads(x) for x in (tmp_path / "cells.jsonl").read_text().splitlines()]
    # 2 models x (lamp, zero-shot once; few-shot, random per seed)
    assert len(cells) == 2 * (1 + 1 + 2 + 2)
    assert {c["evals"] for c in cells if c["method"] == "zero-shot"} == {1}
    assert {c["evals"] for c in cells if c["method"] == "few-shot-30"} == {3}  # smoke: budgets / 10
    text = (tmp_path / "results.md").read_text()
    assert "zero-shot" in text and "Targets:" in text
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["cells"] == len(cells) and result["mean_test"]["lamp"] == pytest.approx(
        sum(c["test"] for c in cells if c["method"] == "lamp") / 2)
    assert result["hindsight_rule"]["rules"] == ["lamp"]
    assert "The best of the one-shot rules (lamp) for each model and target" in text
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 0

    ran = []
    real = bench_transfer.run_cell
    monkeypatch.setattr(bench_transfer, "run_cell", lambda *a, **k: ran.append(a) or real(*a, **k))
    assert bench_transfer.main([*argv, "--resume"]) == 0
    assert ran == []  # every cell was already on disk
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == len(cells)

    # --summarize-only rewrites the report from the cells, computing nothing, even with other methods asked for
    (tmp_path / "results.md").unlink()
    assert bench_transfer.main(["test", "--summarize-only", "--out", str(tmp_path), "--methods", "random-1000"]) == 0
    assert ran == []
    summary = (tmp_path / "results.md").read_text()
    assert summary.split("| model |")[1] == text.split("| model |")[1]  # the same tables
    assert all(c.get("commit") for c in cells) and "Cells measured at: " in summary
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["wall_time_s"] is None  # computed no cell
    with pytest.raises(SystemExit):
        bench_transfer.main(["test", "--summarize-only", "--out", str(tmp_path / "empty")])


def test_history_pack_is_lossless():
    for h in ([], [0.1], [0.1, 0.1, 0.3, 0.3, 0.3, 0.5], [0.2] * 5):
        packed = bench_transfer.pack(h)
        assert bench_transfer.unpack(packed) == h
    assert len(bench_transfer.pack([0.1] * 500 + [0.2] * 500)["changes"]) == 2
    assert bench_transfer.unpack([0.1, 0.2]) == [0.1, 0.2]  # older cells: a plain list


def test_the_hindsight_rule_is_the_mean_of_the_best_rule_per_pair():
    by = {("a", 0.8, "lamp"): [0.5], ("a", 0.8, "erk"): [0.7], ("b", 0.8, "lamp"): [0.4], ("b", 0.8, "erk"): [0.1],
          ("a", 0.8, "global"): [0.9]}  # global is missing for b: not a rule of every pair
    rules, value = bench_transfer.hindsight_rule(by, ["a", "b"], [0.8])
    assert rules == ["lamp", "erk"] and value == pytest.approx((0.7 + 0.4) / 2)
    assert bench_transfer.hindsight_rule({("a", 0.8, "zero-shot"): [0.3]}, ["a"], [0.8]) is None


def test_the_report_shows_how_the_policy_was_selected(tmp_path):
    from agents.policies.layerwise import LayerwisePolicy, save

    path = tmp_path / "p.pt"
    meta = {"command": "prune-rnn pretrain --seed 1", "git_commit": "b" * 40, "git_dirty": False,
            "machine": {"cpu": "CPU", "cpus": 2}, "torch": "2", "wall_time_s": 12.0, "train_tasks": ["a", "b"],
            "validation_tasks": ["c"], "selection": {"metric": "score", "targets": [0.5]},
            "selected_after_episodes": 10, "validation_zero_shot": 0.41,
            "log": [{"episodes": 0, "validation": 0.3}, {"episodes": 10, "validation": 0.41, "train_reward": -0.5}]}
    save(LayerwisePolicy(hidden=8), path, meta)
    text = "\n".join(bench_transfer.pretraining(str(path)))
    assert "`prune-rnn pretrain --seed 1` at commit bbbbbbbbbb" in text and "Wall time 12 s" in text
    assert "| 0 | 0.3000 | - |" in text and "| 10 | 0.4100 (**selected**) | -0.5000 |" in text
    assert "2 training models, 1 validation models" in text
    save(LayerwisePolicy(hidden=8), path)  # no record: nothing to show
    assert bench_transfer.pretraining(str(path)) == [] and bench_transfer.pretraining(None) == []


def test_a_folder_holds_one_operator(tmp_path, monkeypatch, capsys):
    argv = ["test", "--smoke", "--out", str(tmp_path), "--seeds", "0", "--targets", "0.8", "--methods", "lamp"]
    monkeypatch.setattr(bench_transfer, "METHODS", dict(bench_transfer.METHODS))
    assert bench_transfer.main(argv) == 0
    cells = [json.loads(x) for x in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert {c["operator"] for c in cells} == {"magnitude:none"}
    assert json.loads((tmp_path / "results.json").read_text())["operator"] == "magnitude:none"
    with pytest.raises(SystemExit):  # resuming with another operator would mix two tables
        bench_transfer.main([*argv, "--resume", "--operator", "wanda:none"])
    assert "holds cells of operator magnitude:none" in capsys.readouterr().err


def test_checks_state_each_transfer_target_from_the_per_pair_means():
    """Zero-shot against the best rule on the mean and per pair, the share of the gap to the best 1000-evaluation
    search, and the few-shot targets; a pair missing a method is left out of the targets that need it."""
    rules = {"uniform": 0.1, "global": 0.2, "lamp": 0.5, "erk": 0.4, "obd": 0.3}
    by = {}
    for i, (model, zero) in enumerate((("a", 0.6), ("b", 0.55), ("c", 0.45))):
        for rule, v in rules.items():
            by[(model, 0.9, rule)] = [v]
        by[(model, 0.9, "zero-shot")] = [zero]
        by[(model, 0.9, "random-1000")] = [0.6]
        by[(model, 0.9, "reinforce-1000")] = [0.7, 0.7, 0.7]
        by[(model, 0.9, "reinforce-100")] = [0.5]
        if i < 2:
            by[(model, 0.9, "few-shot-100")] = [0.65, 0.62]
    out = "\n".join(bench_transfer.checks(by))
    assert "zero-shot 0.533 vs the best rule on the mean (lamp) 0.500, never below it: met" in out
    assert "on 2 of 3 pairs (target: at least two thirds): met" in out
    assert "closes 17% of the gap from lamp 0.500 to reinforce-1000 0.700 on 3 pairs (target: at least half): NOT " \
           "met" in out
    assert "few-shot-100 0.635 vs max(random-1000, best rule) 0.600 on 2 pairs: met" in out
    assert "few-shot-100 0.635 vs reinforce-100 0.500 + 0.03 on 2 pairs: met" in out
    by[("c", 0.9, "zero-shot")] = [0.3]  # now below LAMP on the mean
    assert "never below it: NOT met" in "\n".join(bench_transfer.checks(by))
    # pick, the other one-evaluation method, is held to the same targets beside zero-shot
    for model, v in (("a", 0.7), ("b", 0.45), ("c", 0.45)):
        by[(model, 0.9, "pick")] = [v]
    out = "\n".join(bench_transfer.checks(by))
    assert "pick 0.533 vs the best rule on the mean (lamp) 0.500, never below it: met" in out
    assert "pick ahead of each pair's own best rule on 1 of 3 pairs (target: at least two thirds): NOT met" in out
    assert "zero-shot ahead of each pair's own best rule on 2 of 3 pairs" in out
    # and so is pick with its refinement
    for model, v in (("a", 0.7), ("b", 0.55), ("c", 0.45)):
        by[(model, 0.9, "pick-refine")] = [v]
    out = "\n".join(bench_transfer.checks(by))
    assert "pick-refine ahead of each pair's own best rule on 2 of 3 pairs (target: at least two thirds): met" in out
    # so is few-shot whose first rival is pick's choice
    for model in ("a", "b"):
        by[(model, 0.9, "few-shot-100-pick")] = [0.7]
    out = "\n".join(bench_transfer.checks(by))
    assert "few-shot-100-pick 0.700 vs max(random-1000, best rule) 0.600 on 2 pairs: met" in out


def test_few_shot_with_pick_scores_pick_s_choice_right_after_the_policy():
    from tiny import tiny_calibrated

    import agents
    from prune_env import PruneRNNEnv

    cell = bench_transfer.run_cell(tiny_calibrated(), 0.8, "few-shot-100-pick", 0, None, 0, "obs:obs")
    assert cell["method"] == "few-shot-100-pick" and cell["evals"] == 100
    picked = agents.search("pick", PruneRNNEnv(tiny_calibrated(), target_sparsity=0.8, criterion="obs",
                                                 reconstruct="obs"), 1).val_score
    history = bench_transfer.unpack(cell["history"])
    assert history[1] >= picked and history[-1] >= history[1]  # the second evaluation is pick's choice


def test_pick_cells_pass_the_refinement_each_method_names(monkeypatch):
    from tiny import tiny_calibrated

    import agents

    search, seen = agents.search, []

    def recording(name, env, budget, **kw):
        result = search(name, env, budget, **kw)
        seen.append((name, kw, result.extras))
        return result

    monkeypatch.setattr(agents, "search", recording)
    for method in ("pick", "pick-refine", "pick-refine2", "lamp-refine"):
        assert bench_transfer.run_cell(tiny_calibrated(), 0.9, method, 0, None, 0, "obs:obs")["evals"] == 1
    (_, ranked, plain), (_, one, refined), (_, default, two), (_, lamp, alone) = seen
    assert ranked.get("refine_prunings") == 0 and "refined" not in plain
    assert one.get("refine_from") == ("chosen",) and list(refined["refinements"]) == [refined["chosen"]]
    assert "refine_from" not in default and list(two["refinements"]) == [two["chosen"], "lamp"]
    assert lamp["policies"] == [] and alone["chosen"] == "lamp" and alone["refined"]["prunings"] > 0
