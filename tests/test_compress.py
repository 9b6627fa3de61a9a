"""``prune-rnn compress`` / :func:`agents.cli.compress.compress`: end to end on digits and a tiny task, the exported
file scores what the report says, stage-level resume, refused settings, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import agents
import agents.cli.compress as C
import prune_env.compression.gradual
from agents.cli.compress_report import classes_of
from agents.cli.main import main
from prune_env.compression.export import load
from prune_env.task import split_score

TINY = "tiny:tiny_task"


def _load(path, task):
    return load(path, classes=classes_of(task.model))


def test_cli_digits_end_to_end_report_matches_the_exported_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compress", "--task", "digits", "--sparsity", "0.8", "--bits", "8", "--steps", "12", "--lr", "1e-2",
                 "--out", str(out), "--no-progress"]) == 0
    assert "report:" in capsys.readouterr().out
    for f in ("compress.json", "search.json", "finetuned.pt", "finetune.json", "model.prnn", "export.json",
              "report.json", "report.md"):
        assert (out / f).is_file(), f
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert rows["final"]["bytes"] == (out / "model.prnn").stat().st_size
    assert rows["final"]["bytes"] < 0.15 * rows["dense"]["bytes"]  # 80 % sparse, 8-bit: far below fp32 dense
    assert rows["final"]["sparsity"] >= 0.8 - 1e-3
    # the exported model, loaded in this process, scores exactly what the report says
    from prune_env.tasks import make_task

    task = make_task("digits", progress=False)
    model = _load(out / "model.prnn", task)
    assert split_score(task.test(model), "test")[0] == pytest.approx(rows["final"]["test_score"], abs=1e-9)
    assert split_score(task.evaluate(model))[0] == pytest.approx(rows["final"]["val_score"], abs=1e-9)
    # 8-bit: at most 2**8 distinct values per output row of every prunable weight
    w = model.rnn.weight_hh_l0
    assert max(len(torch.unique(row)) for row in w) <= 256
    assert "| dense |" in (out / "report.md").read_text()


def test_fine_tuning_recovers_what_one_shot_pruning_lost(tmp_path):
    from tiny import tiny_task

    task = tiny_task("gru", hidden=16)
    report = C.compress(task, 0.8, tmp_path, agent="uniform", steps=60, lr=3e-2)
    rows = report["rows"]
    assert rows["final"]["val_score"] > rows["one_shot"]["val_score"]


def test_interrupted_after_search_resumes_without_repeating_it(tmp_path, monkeypatch):
    from tiny import tiny_task

    task = tiny_task("lstm")
    calls = {"search": 0}
    real_search = agents.search

    def counting_search(*a, **k):
        calls["search"] += 1
        return real_search(*a, **k)

    def killed(*a, **k):
        raise KeyboardInterrupt  # the process dies during fine-tuning

    monkeypatch.setattr(agents, "search", counting_search)
    monkeypatch.setattr(prune_env.compression.gradual, "gradual_prune", killed)
    with pytest.raises(KeyboardInterrupt):
        C.compress(task, 0.7, tmp_path, steps=4)
    assert calls["search"] == 1 and (tmp_path / "search.json").exists()
    assert not (tmp_path / "finetune.json").exists() and not list(tmp_path.glob(".*.tmp"))
    before = (tmp_path / "search.json").read_bytes()
    monkeypatch.undo()
    monkeypatch.setattr(agents, "search", counting_search)
    report = C.compress(task, 0.7, tmp_path, steps=4)
    assert calls["search"] == 1  # not repeated
    assert (tmp_path / "search.json").read_bytes() == before
    assert report["rows"]["final"]["sparsity"] >= 0.7 - 1e-3
    # a finished run is all reused: nothing is recomputed
    monkeypatch.setattr(prune_env.compression.gradual, "gradual_prune", killed)
    assert C.compress(task, 0.7, tmp_path, steps=4)["rows"] == report["rows"]


def test_other_settings_in_the_same_directory_are_refused(tmp_path):
    from tiny import tiny_task

    task = tiny_task("gru")
    C.compress(task, 0.6, tmp_path, steps=2)
    with pytest.raises(C.CompressError, match=r"steps=2 \(now 3\)"):
        C.compress(task, 0.6, tmp_path, steps=3)
    with pytest.raises(C.CompressError, match="another model"):
        C.compress(tiny_task("gru", seed=1), 0.6, tmp_path, steps=2)


def test_lr_schedule_and_select_reach_gradual_prune_and_the_settings(tmp_path, monkeypatch):
    from tiny import tiny_task

    task = tiny_task("gru")
    seen = {}
    real = prune_env.compression.gradual.gradual_prune
    monkeypatch.setattr(prune_env.compression.gradual, "gradual_prune",
                        lambda *a, **k: (seen.update(k), real(*a, **k))[1])
    report = C.compress(task, 0.6, tmp_path / "a", steps=4, lr_schedule="cosine", select="nll")
    assert seen["lr_schedule"] == "cosine" and seen["select"] == "nll"
    assert report["settings"]["lr_schedule"] == "cosine" and report["settings"]["select"] == "nll"
    assert "cosine learning-rate decay" in (tmp_path / "a" / "report.md").read_text()
    with pytest.raises(C.CompressError, match="lr_schedule='cosine' \\(now 'constant'\\)"):
        C.compress(task, 0.6, tmp_path / "a", steps=4, select="nll")
    # defaults are not recorded, so directories from before these options existed still resume
    C.compress(task, 0.6, tmp_path / "b", steps=2)
    assert "lr_schedule" not in json.loads((tmp_path / "b" / "compress.json").read_text())["settings"]
    with pytest.raises(ValueError, match="lr_schedule"):
        C.compress(task, 0.6, tmp_path / "c", steps=2, lr_schedule="step")


def test_hidden_unit_gives_a_physically_smaller_model(tmp_path):
    from tiny import tiny_task

    task = tiny_task("lstm", hidden=16)
    report = C.compress(task, 0.5, tmp_path, granularity="hidden_unit", steps=4)
    rows = report["rows"]
    assert report["settings"]["agent"] == "uniform"
    assert rows["final"]["params"]["total"] < rows["dense"]["params"]["total"]
    assert rows["final"]["latency_ms"] is not None and rows["final"]["sparsity"] >= 0.5 - 1e-3
    model = _load(tmp_path / "model.prnn", task)
    from prune_env.pruning.layers import rnn_modules

    assert all(m.hidden_size < 16 for m in rnn_modules(model))


@pytest.mark.parametrize("argv, words", [
    (["--sparsity", "0.8"], "--out"),
    (["--sparsity", "1.2", "--out", "X"], "--sparsity"),
    (["--sparsity", "0.8", "--bits", "5", "--out", "X"], "bits"),
    (["--sparsity", "0.8", "--steps", "-1", "--out", "X"], "steps"),
    (["--sparsity", "0.8", "--agent", "nope", "--out", "X"], "nope"),
    (["--sparsity", "0.8", "--granularity", "hidden_unit", "--agent", "lamp", "--out", "X"], "unstructured"),
    (["--sparsity", "0.8", "--lr-schedule", "step", "--out", "X"], "--lr-schedule"),
    (["--sparsity", "0.8", "--select", "acc", "--out", "X"], "--select"),
])
def test_bad_arguments_one_line_exit_2(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compress", "--task", TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and words in err, err


class _Hyper:
    """A hyper-parameter object no module description can hold (as pytorch-forecasting and Lightning models carry)."""

    def __init__(self, hidden):
        self.hidden = hidden


def test_a_model_with_an_undescribable_attribute_compresses_to_a_weights_only_file(tmp_path, capsys):
    import copy

    from tiny import tiny_task

    task = tiny_task("lstm", hidden=16)
    task.model.hparams = _Hyper(16)
    before = copy.deepcopy(task.model.state_dict())
    report = C.compress(task, 0.7, tmp_path, agent="lamp", steps=4, lr=1e-2)
    assert "weights-only" in capsys.readouterr().err and "model=" in report["load"]
    assert "Load the file with `prune_env.load(path, model=" in (tmp_path / "report.md").read_text()
    # the file loads into the user's own model and scores what the report says; the user's model is untouched
    fresh = tiny_task("lstm", hidden=16).model
    fresh.hparams = _Hyper(16)
    loaded = load(tmp_path / "model.prnn", model=fresh)
    assert loaded.hparams.hidden == 16
    assert split_score(task.evaluate(loaded))[0] == pytest.approx(report["rows"]["final"]["val_score"], abs=1e-9)
    assert report["rows"]["final"]["sparsity"] >= 0.7 - 1e-3
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in before.items())
    # hidden units change the shapes a weights-only file would be loaded into: refused before any stage
    with pytest.raises(C.CompressError, match="cannot be exported"):
        C.compress(task, 0.5, tmp_path / "units", granularity="hidden_unit", steps=2)
    assert not (tmp_path / "units" / "search.json").exists()
