"""``compress`` with the data-aware operators: ``operator``/``reconstruct`` reach the search env and the report, exact
final sparsity, fine-tuning from the one-shot model keeps its masks, resumed runs with another operator are refused or
redone, bad values are one-line CLI errors."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import VOCAB, TinyLM

import agents
import agents.cli.compress as C
from agents.cli.compress_oneshot import finetune_oneshot, masks_kept, oneshot_masks, oneshot_model
from agents.cli.compress_report import classes_of
from agents.cli.main import main
from prune_env import PruneRNNEnv, RNNTask
from prune_env.compression.export import load
from prune_env.pruning.layers import find_prunable_layers, get_param
from prune_env.task import split_score
from prune_env.tasks.training import SampledLoss

OBS = {"operator": "obs", "reconstruct": "obs", "finetune_from": "oneshot"}


def calibrated_task(rnn: str = "gru", seed: int = 0) -> RNNTask:
    """A tiny LM with training data (``train_loss``, ``calibration_batches``) apart from validation and test: the next
    token is mostly the current one plus 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyLM(rnn, hidden=12).eval()
    steps = torch.where(torch.rand(600, generator=g) < 0.8, 1, torch.randint(0, VOCAB, (600,), generator=g))
    train = torch.cumsum(steps, 0) % VOCAB
    xv, xt = (torch.randint(0, VOCAB, (16, 10), generator=g) for _ in range(2))
    return RNNTask(model, eval_batch=(xv, (xv + 1) % VOCAB), metric="accuracy", name=f"calibrated-{rnn}",
                   test=lambda m: float((m(xt).argmax(-1) == (xt + 1) % VOCAB).float().mean()),
                   train_loss=SampledLoss(train, batch=8, seq_len=10),
                   calibration_batches=[train[:120].reshape(12, 10), train[120:240].reshape(12, 10)])


def _model(out, task):
    return load(out / "model.prnn", classes=classes_of(task.model))


def _val(task, model) -> float:
    return split_score(task.evaluate(model))[0]


def _zeros(model) -> list[int]:
    return [int((get_param(model, la) == 0).sum()) for la in find_prunable_layers(model)]


def test_operator_reaches_the_env_the_search_record_and_the_report(tmp_path):
    task = calibrated_task()
    report = C.compress(task, 0.8, tmp_path, operator="wanda", reconstruct="obs", steps=4)
    env = report["operator"]["env"]
    assert env["criterion"] == "wanda" and env["reconstruct"] == "obs" and env["calibration"]["batches"] == 2
    assert json.loads((tmp_path / "search.json").read_text())["operator"] == env
    assert report["settings"]["operator"] == "wanda" and report["settings"]["reconstruct"] == "obs"
    assert "Operator: `wanda` ranking, OBS least-squares reconstruction" in (tmp_path / "report.md").read_text()
    # the one-shot row is the reconstructed model of that operator, not the magnitude one
    ref = PruneRNNEnv(task, target_sparsity=0.8, device="cpu", criterion="wanda", reconstruct="obs")
    oneshot = ref.pruned_model(report["allocation"])
    assert report["rows"]["one_shot"]["val_score"] == pytest.approx(_val(task, oneshot), abs=1e-9)
    plain = PruneRNNEnv(task, target_sparsity=0.8, device="cpu").pruned_model(report["allocation"])
    assert not torch.equal(plain.rnn.weight_hh_l0, oneshot.rnn.weight_hh_l0)


def test_defaults_are_not_recorded_and_the_report_says_they_are_the_defaults(tmp_path):
    report = C.compress(calibrated_task(), 0.6, tmp_path, steps=2)
    settings = json.loads((tmp_path / "compress.json").read_text())["settings"]
    assert not {"operator", "reconstruct", "finetune_from", "sequential"} & set(settings)
    assert report["operator"]["operator"] == "magnitude" and report["operator"]["finetune_from"] == "dense"
    assert "(the defaults)" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("finetune_from", ["dense", "oneshot"])
def test_exact_final_sparsity_per_layer(tmp_path, finetune_from):
    task = calibrated_task("lstm")
    report = C.compress(task, 0.75, tmp_path, steps=6, lr=1e-2, **{**OBS, "finetune_from": finetune_from})
    counts = json.loads((tmp_path / "search.json").read_text())["counts"]
    assert _zeros(_model(tmp_path, task)) == counts  # float32: exactly the allocation's counts, layer by layer
    assert report["rows"]["final"]["sparsity"] == pytest.approx(report["rows"]["one_shot"]["sparsity"], abs=1e-12)


def test_finetuning_from_the_one_shot_model_keeps_its_masks_and_trains_the_rest(tmp_path):
    task = calibrated_task()
    report = C.compress(task, 0.8, tmp_path, steps=20, lr=1e-2, bits=8, **OBS)
    assert report["finetune"]["from"] == "oneshot" and report["finetune"]["masks_kept"] is True
    assert report["finetune"]["end"] == 0  # full sparsity from the first step
    env = PruneRNNEnv(task, target_sparsity=0.8, device="cpu", criterion="obs", reconstruct="obs")
    search = json.loads((tmp_path / "search.json").read_text())
    masks = oneshot_masks(env, search["counts"])
    final, oneshot = _model(tmp_path, task), oneshot_model(env, search["allocation"])
    assert masks_kept(final, masks) and masks_kept(oneshot, masks)
    assert sum(int(m.sum()) for m in masks.values()) == sum(search["counts"])
    assert report["finetune"]["best_step"] > 0 and report["rows"]["final"]["val_score"] >= \
        report["rows"]["one_shot"]["val_score"]
    changed = [not torch.allclose(p, q) for (n, p), (_, q) in zip(final.named_parameters(),
                                                                    oneshot.named_parameters()) if n in masks]
    assert all(changed)
    # the task's model is untouched
    assert not any(bool((p == 0).any()) for p in task.model.parameters())


def test_a_kept_weight_that_is_exactly_zero_does_not_take_a_masked_weight_s_place():
    task = calibrated_task()
    env = PruneRNNEnv(task, target_sparsity=0.7, device="cpu", criterion="obs", reconstruct="obs")
    alloc = {n: 0.7 for n in env.layer_names}
    masks = oneshot_masks(env, env.counts_for(alloc))
    oneshot = oneshot_model(env, alloc)
    flat = masks["rnn.weight_hh_l0"].reshape(-1)
    kept = int(torch.nonzero(~flat)[0])  # the first kept weight, ahead of masked ones in a stable ranking
    assert bool(flat[kept + 1:].any())
    with torch.no_grad():
        oneshot.rnn.weight_hh_l0.view(-1)[kept] = 0.0  # a kept weight, exactly zero
    before = oneshot.rnn.weight_hh_l0.detach().clone()
    result = finetune_oneshot(env, oneshot, alloc, masks, steps=5, lr=1e-2, seed=0)
    assert masks_kept(result.model, masks)
    assert result.model.rnn.weight_hh_l0.reshape(-1)[kept] != 0  # it trains
    assert torch.equal(oneshot.rnn.weight_hh_l0, before)  # the one-shot model given is not modified


def test_sequential_refit_reaches_the_one_shot_model(tmp_path):
    task = calibrated_task("lstm")
    report = C.compress(task, 0.8, tmp_path, steps=0, operator="obs", reconstruct="obs", sequential=True)
    env = PruneRNNEnv(task, target_sparsity=0.8, device="cpu", criterion="obs", reconstruct="obs")
    seq = env.pruned_model(report["allocation"], sequential=True)
    assert report["rows"]["one_shot"]["val_score"] == pytest.approx(_val(task, seq), abs=1e-9)
    assert report["operator"]["sequential"] is True
    assert "layer after layer" in (tmp_path / "report.md").read_text()


def test_resumed_run_with_another_operator_is_refused_and_a_mixed_up_directory_redoes_the_stages(tmp_path, capsys,
                                                                                                 monkeypatch):
    task = calibrated_task()
    first = C.compress(task, 0.7, tmp_path, steps=4)
    with pytest.raises(C.CompressError, match=r"operator='magnitude' \(now 'obs'\)"):
        C.compress(task, 0.7, tmp_path, steps=4, operator="obs")
    with pytest.raises(C.CompressError, match=r"finetune_from='dense' \(now 'oneshot'\)"):
        C.compress(task, 0.7, tmp_path, steps=4, finetune_from="oneshot")
    # compress.json rewritten for another operator: every stage sealed with magnitude is redone, none is reused
    path = tmp_path / "compress.json"
    record = json.loads(path.read_text())
    record["settings"].update(operator="obs", reconstruct="obs")
    path.write_text(json.dumps(record))
    calls = {"search": 0}
    real = agents.search
    monkeypatch.setattr(agents, "search", lambda *a, **k: (calls.update(search=calls["search"] + 1), real(*a, **k))[1])
    capsys.readouterr()
    redone = C.compress(task, 0.7, tmp_path, steps=4, operator="obs", reconstruct="obs")
    err = capsys.readouterr().err
    assert calls["search"] == 1 and "written with other settings; redoing the search stage" in err
    assert redone["operator"]["env"]["criterion"] == "obs" and redone["rows"] != first["rows"]
    fresh = C.compress(task, 0.7, tmp_path / "fresh", steps=4, operator="obs", reconstruct="obs")
    assert redone["rows"]["final"]["val_score"] == fresh["rows"]["final"]["val_score"]
    # and the redone run resumes as itself
    assert C.compress(task, 0.7, tmp_path, steps=4, operator="obs", reconstruct="obs")["rows"] == redone["rows"]
    assert calls["search"] == 2  # the fresh run's; the resume searched nothing


@pytest.mark.parametrize("argv, words", [
    (["--operator", "nope"], "--operator"),
    (["--reconstruct", "nope"], "--reconstruct"),
    (["--finetune-from", "sparse"], "--finetune-from"),
    (["--finetune-from", "oneshot", "--granularity", "hidden_unit", "--agent", "uniform"], "finetune_from"),
    (["--finetune-from", "oneshot", "--criterion", "movement"], "criterion"),
    (["--sequential-refit"], "sequential"),
    (["--operator", "wanda"], "calibration"),  # the tiny task has no training inputs
    (["--reconstruct", "obs"], "calibration"),
])
def test_bad_operator_values_one_line_exit_2(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compress", "--task", "tiny:tiny_task", "--sparsity", "0.8", "--out", "X", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and words in err, err


def test_bad_operator_values_from_python_name_the_argument(tmp_path):
    task = calibrated_task()
    for kwargs, name in (({"operator": "movement"}, "operator"), ({"reconstruct": "gptq"}, "reconstruct"),
                         ({"finetune_from": "x"}, "finetune_from"), ({"sequential": 1, "reconstruct": "obs"},
                                                                     "sequential")):
        with pytest.raises((ValueError, TypeError), match=name):
            C.compress(task, 0.6, tmp_path / name, steps=1, **kwargs)
