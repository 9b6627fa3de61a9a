"""The benchmark suite: every config is runnable as written, the runner files one folder per benchmark, and every
filed folder belongs to a config."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from benchmarks import RESULTS, ROOT, __main__, _meta, runner
from benchmarks.runner import ConfigError, load_config, names

NAMES = names()


def test_the_suite_has_its_benchmarks():
    for name in ("agents_digits", "agents_pydoc", "agents_gru", "transfer", "env_speed", "resume_kill",
                 "resume_reinforce", "validate"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_config_loads_and_names_a_runnable_command(name):
    cfg = load_config(name)
    assert cfg.name == name and cfg.out == RESULTS / name and len(cfg.description) > 20
    if cfg.kind == "script":
        module = cfg.settings.get("module") or f"benchmarks.{cfg.settings['script']}"
        assert callable(importlib.import_module(module).main)
        cmds = runner.script_commands(cfg, "OUT", env={})
        assert all(cmd[1:3] == ["-m", module] for cmd in cmds)
        assert any("OUT" in w for w in cmds[-1]), "the results folder reaches the command"
    elif cfg.kind == "bench":
        argv = runner.bench_argv(cfg, env={})
        assert argv[:2] == ["bench", "--task"] and "--out" not in argv
    elif cfg.kind == "compress":
        assert runner.compress_argv(cfg, env={})[:2] == ["compress", "--task"]


def test_every_filed_folder_belongs_to_a_benchmark():
    filed = {p.name for p in RESULTS.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert filed <= set(NAMES), f"results folders without a config: {sorted(filed - set(NAMES))}"
    assert not [p for p in RESULTS.iterdir() if p.is_file()], "loose files under results/: one folder per benchmark"


def test_the_readme_lists_every_benchmark_as_the_runner_writes_it():
    """Every benchmark, its kind and description as the configs say, its wall time and CPU as its filed run records
    them (a run filed after the README was written may still read "not filed")."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    table = text.split(__main__.BEGIN)[1].split(__main__.END)[0].strip().splitlines()
    live = __main__.table()
    assert table[:2] == live[:2]
    assert [line.split("`")[1] for line in table[2:]] == NAMES, "the README is stale: python -m benchmarks --readme"
    for row, now in zip(table[2:], live[2:], strict=True):
        cells, want = row.split(" | "), now.split(" | ")
        assert cells[:2] + cells[4:] == want[:2] + want[4:], "stale: python -m benchmarks --readme"
        assert cells[2:4] == want[2:4] or cells[2] == "not filed", "stale: python -m benchmarks --readme"


def test_bench_argv_spells_out_the_config():
    cfg = load_config("agents_digits")
    flag = runner.max_evals_flag()
    assert flag in ("--max-evals", "--budget")
    assert runner.bench_argv(cfg, env={}) == [
        "bench", "--task", "digits", "--sparsity", "0.9", "0.8", "--agents", "uniform", "global", "gradient", "lamp",
        "erk", "random", "sensitivity", "reinforce", "ppo", flag, "1000", "--seeds", "0", "1", "2",
        "--vector-envs", "8"]
    cfg = load_config("compress_ptb_90")
    argv = runner.compress_argv(cfg, env={"PRUNE_RNN_PTB": "/data/ptb"})
    assert argv == ["compress", "--task", "/data/ptb", "--sparsity", "0.9", "--steps", "2000", "--lr-schedule",
                    "cosine", "--select", "nll"]


def _configs(tmp_path, monkeypatch, **files: str) -> Path:
    configs, results = tmp_path / "configs", tmp_path / "results"
    configs.mkdir()
    for name, text in files.items():
        (configs / f"{name}.toml").write_text(text)
    monkeypatch.setattr(runner, "CONFIGS", configs)
    monkeypatch.setattr(runner, "RESULTS", results)
    monkeypatch.setattr(runner, "RUNS", tmp_path / "runs")
    return results


@pytest.mark.parametrize("text, error", [
    ('kind = "bench"\n', "description"),
    ('description = "a benchmark of things"\nkind = "nope"\n', "kind"),
    ('description = "a benchmark of things"\nkind = "bench"\ntask = "digits"\n', "missing"),
    ('description = "a benchmark of things"\nkind = "bench"\ntask = "digits"\nagents = ["uniform"]\ntargets = [0.5]\n'
     'seeds = [0]\nmax_evals = 0\n', "max_evals"),
    ('description = "a benchmark of things"\nkind = "bench"\ntask = "digits"\nagents = ["uniform"]\ntargets = [0.5]\n'
     'seeds = [0]\nmax_evals = 2\nbudget = 3\n', "unknown keys"),
    ('description = "a benchmark of things"\nkind = "script"\nargs = []\n', "exactly one of"),
    ('description = "a benchmark of things"\nkind = "bench"\n[oops\n', "bad.toml"),
])
def test_bad_configs_are_refused_naming_the_problem(tmp_path, monkeypatch, text, error):
    _configs(tmp_path, monkeypatch, bad=text)
    with pytest.raises(ConfigError, match=error):
        load_config("bad")


def test_an_unknown_benchmark_is_a_one_line_error(capsys):
    assert __main__.main(["no_such_benchmark"]) == 2
    assert "unknown benchmark 'no_such_benchmark'" in capsys.readouterr().err


TINY_BENCH = """description = "two rules on a tiny model, the runner end to end"
kind = "bench"
task = "tiny:tiny_task"
agents = ["uniform", "global"]
targets = [0.6]
seeds = [0]
max_evals = 2
"""


def test_a_bench_config_files_one_folder_and_a_rerun_replaces_it(tmp_path, monkeypatch):
    results = _configs(tmp_path, monkeypatch, tiny=TINY_BENCH)
    assert runner.run("tiny") == 0
    folder = results / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["allocation.png", "pareto.png", "results.csv",
                                                       "results.json", "results.md"]
    data = json.loads((folder / "results.json").read_text())
    assert [(r["agent"], r["target_sparsity"]) for r in data["runs"]] == [("uniform", 0.6), ("global", 0.6)]
    md = (folder / "results.md").read_text()
    assert "| 0.6 | uniform |" in md and "| 0.6 | global |" in md and data["meta"]["command"] in md
    (folder / "stale.txt").write_text("from an older run")
    assert runner.run("tiny") == 0
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in results.iterdir()) == ["tiny"]  # no temporary or old folder left
    assert runner.recorded("tiny")["wall_time_s"] == json.loads((folder / "results.json").read_text())["meta"][
        "wall_time_s"]


def test_the_agent_table_marks_a_dirty_run(tmp_path):
    meta = {"command": "prune-rnn bench", "git_commit": "a" * 40, "git_dirty": True, "started": "now",
            "wall_time_s": 3.0}
    summary = [{"agent": "global", "target_sparsity": 0.9, "test_mean": 0.5, "test_std": 0.0, "val_mean": 0.4,
                "evals": 1, "evals_to_beat_global": None, "wall_time_s": 0.1}]
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": []}))
    runner.write_bench_markdown(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert _meta.DIRTY_NOTE in md and "a" * 10 in md and "| 0.9 | global | 0.5000 ± 0.0000 |" in md


def test_a_failed_bench_files_nothing(tmp_path, monkeypatch):
    results = _configs(tmp_path, monkeypatch, tiny=TINY_BENCH.replace('"global"', '"no-such-agent"'))
    assert runner.run("tiny") == 2
    assert not results.exists() or not any(results.iterdir())


def test_script_commands_place_the_results_folder_and_extra_arguments():
    cfg = load_config("distill_search")
    cmds = runner.script_commands(cfg, "benchmarks/results/distill_search", ["--steps", "5"], env={})
    assert [c[3:] for c in cmds] == [["search", "--out", "benchmarks/results/distill_search"],
                                     ["fit", "--out", "benchmarks/results/distill_search", "--steps", "5"]]
    cfg = load_config("env_speed")
    (cmd,) = runner.script_commands(cfg, "X", env={})
    assert cmd[2:] == ["benchmarks.env_speed", "--tasks", "digits", "gru", "pydoc-char", "--reps", "60", "--out", "X"]
    (cmd,) = runner.script_commands(cfg, "X", ["--out", "/tmp/elsewhere"], env={})
    assert cmd[-2:] == ["--out", "/tmp/elsewhere"] and cmd.count("--out") == 1


def test_scripts_record_how_to_rerun_them_and_their_wall_time(tmp_path):
    words = _meta.command_line([str(ROOT / "benchmarks" / "env_speed.py"), "--reps", "3"])
    assert words == ["python", "-m", "benchmarks.env_speed", "--reps", "3"]
    assert _meta.command_line(["other.py", "-x"]) == ["python", "other.py", "-x"]
    meta = _meta.run_meta([str(ROOT / "benchmarks" / "env_speed.py")])
    assert meta["command"] == "python -m benchmarks.env_speed"
    _meta.write_results(tmp_path / "out", {"meta": meta, "x": float("nan")}, "# title")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["x"] is None and data["meta"]["wall_time_s"] >= 0
    assert (tmp_path / "out" / "results.md").read_text() == "# title\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json", "results.md"]


def test_validate_covers_exactly_the_tables_with_replay_records():
    from benchmarks.validate_all import replay_folders

    folders = replay_folders()
    assert {"agents_digits", "agents_gru", "agents_pydoc", "oracle_digits"} <= set(folders)
    for name in folders:
        rows = json.loads((RESULTS / name / "results.json").read_text())["runs"]
        assert rows and all("replay" in r for r in rows)
    assert "finetuned_pydoc" not in folders and "transfer" not in folders


def test_every_benchmark_script_is_registered_with_the_runner():
    tools = {"__init__", "__main__", "_meta", "runner", "compare_runs"}
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - tools
    named = {load_config(n).settings.get("script") for n in NAMES}
    assert scripts <= named, f"scripts without a config in benchmarks/configs/: {sorted(scripts - named)}"
