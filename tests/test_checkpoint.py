"""Resumable searches: a REINFORCE search killed part-way and resumed from its checkpoint uses exactly
its evaluation cap in all and returns the uninterrupted run's result."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from agent_helpers import counted_env
from tiny import VOCAB, _nll

import agents
from agents.core.checkpoint import CheckpointError, read_checkpoint
from prune_env import PruneRNNEnv

MAX_EVALS = 40


class Killed(BaseException):
    """Stands in for SIGKILL: not an ``Exception``, so nothing on the way up catches it (the env wraps
    ``Exception``s from ``task.evaluate`` in an ``EvaluationError``)."""


def killed_after(counter, k: int) -> None:
    """Make the ``k + 1``-th scoring raise :class:`Killed` (``k`` evaluations finish)."""
    fn = counter.fn

    def evaluate(model):
        if counter.calls > k:
            raise Killed
        return fn(model)

    counter.fn = evaluate


def same(a: agents.SearchResult, b: agents.SearchResult) -> None:
    assert (a.val_score, a.allocation, a.history, a.evals) == (b.val_score, b.allocation, b.history, b.evals)
    assert torch.equal(a.policy.bias, b.policy.bias) and torch.equal(a.policy.log_std, b.policy.log_std)


def make_env(mode: str = "joint", target: float = 0.6, finetune_steps: int = 0, **task_kwargs):
    """``counted_env``, optionally with recovery fine-tuning (which seeds itself from the env's ``np_random``)."""
    env, counter = counted_env(mode, target, **task_kwargs)
    if finetune_steps:
        env.task.train_loss = _train_loss
        env = PruneRNNEnv(env.task, target_sparsity=target, mode=mode, device="cpu", finetune_steps=finetune_steps)
        counter.calls = 0
    return env, counter


def _train_loss(model, generator):
    """Fine-tuning batches drawn from ``generator`` (which the env seeds from its ``np_random``)."""
    x = torch.randint(0, VOCAB, (8, 10), generator=generator)
    return _nll(model, x, (x + 1) % VOCAB)


def search(max_evals: int = MAX_EVALS, seed: int = 0, mode: str = "joint", env_kwargs=None, **kw):
    env, counter = make_env(mode, **(env_kwargs or {}))
    return env, counter, lambda **more: agents.search("reinforce", env, max_evals, seed=seed, **kw, **more)


def reference(max_evals: int = MAX_EVALS, seed: int = 0, mode: str = "joint", env_kwargs=None, **kw):
    return search(max_evals, seed, mode, env_kwargs, **kw)[2]()


def evals_in(path) -> int:
    return int(read_checkpoint(str(path))["evals"])


# ------------------------------------------------------------------------------------------- uninterrupted
def test_checkpointing_does_not_change_the_result(tmp_path):
    ck = tmp_path / "ck.pt"
    ref = reference()
    _, counter, run = search(checkpoint=str(ck), checkpoint_every=10)
    res = run()
    same(res, ref)
    assert counter.calls == res.evals == MAX_EVALS
    assert evals_in(ck) == MAX_EVALS  # the last checkpoint is the finished search
    assert res.extras["resumed_at"] == 0

    # resuming a finished search scores nothing and returns the same result
    _, counter, run = search(checkpoint=str(ck), checkpoint_every=10)
    again = run()
    same(again, ref)
    assert counter.calls == 0 and again.extras["resumed_at"] == MAX_EVALS


# ------------------------------------------------------------------------------------------- kill + resume
@pytest.mark.parametrize("mode, kill, env_kwargs", [
    ("joint", 13, None),
    ("joint", 33, None),
    ("joint", 21, {"finetune_steps": 2}),  # fine-tuning draws from the env's np_random: it must be restored
    ("sequential", 17, None),
])
def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path, mode, kill, env_kwargs):
    max_evals = 24 if env_kwargs else MAX_EVALS
    ref = reference(max_evals, mode=mode, env_kwargs=env_kwargs)
    ck = tmp_path / "ck.pt"
    opts = dict(checkpoint=str(ck), checkpoint_every=5)

    _, counter, run = search(max_evals, mode=mode, env_kwargs=env_kwargs, **opts)
    killed_after(counter, kill)
    with pytest.raises(Killed):
        run()
    assert counter.calls == kill + 1  # the kill came during the (kill+1)-th scoring
    saved = evals_in(ck)
    assert 0 < saved <= kill

    _, counter, run = search(max_evals, mode=mode, env_kwargs=env_kwargs, **opts)
    res = run()
    assert counter.calls == max_evals - saved  # the cap counts across the kill: only what the checkpoint lacks
    assert res.evals == len(res.history) == max_evals
    assert res.extras["resumed_at"] == saved
    same(res, ref)


def test_resume_after_two_kills(tmp_path):
    ref = reference()
    ck = str(tmp_path / "ck.pt")
    scored = 0
    for kill in (9, 11):  # the second kill comes 11 evaluations after the first resume
        _, counter, run = search(checkpoint=ck, checkpoint_every=4)
        killed_after(counter, kill)
        with pytest.raises(Killed):
            run()
        scored += kill
    saved = evals_in(ck)
    assert saved == 16  # 8 before the first kill (at 9), 8 more before the second (at 8 + 11 = 19)
    _, counter, run = search(checkpoint=ck, checkpoint_every=4)
    res = run()
    same(res, ref)
    assert counter.calls == MAX_EVALS - saved
    assert scored + counter.calls == MAX_EVALS + (9 - 8) + (19 - 16)  # what came after a last checkpoint is redone


def test_resume_leaves_the_global_rngs_alone(tmp_path):
    ck = str(tmp_path / "ck.pt")
    _, counter, run = search(checkpoint=ck, checkpoint_every=5)
    killed_after(counter, 12)
    with pytest.raises(Killed):
        run()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expect = random.random(), np.random.rand(), torch.rand(1)
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    search(checkpoint=ck, checkpoint_every=5)[2]()
    assert (random.random(), np.random.rand(), torch.rand(1)) == expect


# ------------------------------------------------------------------------------------------- refusals
@pytest.fixture
def partial_checkpoint(tmp_path):
    ck = str(tmp_path / "ck.pt")
    _, counter, run = search(checkpoint=ck, checkpoint_every=5)
    killed_after(counter, 12)
    with pytest.raises(Killed):
        run()
    return ck


@pytest.mark.parametrize("change, match", [
    (dict(seed=1), "seed: 0 in the checkpoint, 1 now"),
    (dict(max_evals=MAX_EVALS + 1), f"max_evals: {MAX_EVALS} in the checkpoint, {MAX_EVALS + 1} now"),
    (dict(env_kwargs={"target": 0.7}), "target_sparsity: 0.6 in the checkpoint, 0.7 now"),
    (dict(env_kwargs={"seed": 1}), "model_sha256"),  # another tiny model: same names and sizes, other weights
    (dict(env_kwargs={"hidden": 6}), "numels"),
    (dict(learning_rate=0.1), "options.learning_rate: 0.05 in the checkpoint, 0.1 now"),
    (dict(mode="sequential"), "env.mode: 'joint' in the checkpoint, 'sequential' now"),
])
def test_resuming_a_different_search_is_refused(partial_checkpoint, change, match):
    change = dict(change)
    env_kwargs = change.pop("env_kwargs", None)
    _, counter, run = search(env_kwargs=env_kwargs, checkpoint=partial_checkpoint, checkpoint_every=5, **change)
    with pytest.raises(CheckpointError, match="was written by a different search") as e:
        run()
    assert match in str(e.value)
    assert counter.calls == 0
    assert evals_in(partial_checkpoint) > 0  # left as it was


def test_options_that_do_not_change_the_result_may_change(partial_checkpoint, tmp_path):
    ref = reference()
    res = search(checkpoint=partial_checkpoint, checkpoint_every=7, save_path=str(tmp_path / "p.pt"))[2]()
    same(res, ref)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "other_file"])
def test_corrupted_checkpoint_is_refused(partial_checkpoint, damage):
    data = open(partial_checkpoint, "rb").read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = b"not a checkpoint at all"
    elif damage == "flip":  # torch's zip records CRCs: one changed byte in the middle is caught
        i = len(data) // 2
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    with open(partial_checkpoint, "wb") as f:
        if damage == "other_file":
            torch.save({"state_dict": {"w": torch.zeros(2)}}, f)
        else:
            f.write(data)
    _, counter, run = search(checkpoint=partial_checkpoint, checkpoint_every=5)
    match = {"other_file": "is not a prune-rnn-gym search checkpoint",
             "flip": "is corrupted: its content does not match its SHA-256"}.get(damage, "is unreadable")
    with pytest.raises(CheckpointError, match=match):
        run()
    assert counter.calls == 0


def test_crash_between_write_and_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ck = tmp_path / "ck.pt"
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated crash before the rename")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    _, counter, run = search(checkpoint=str(ck), checkpoint_every=8)
    with pytest.raises(OSError, match="simulated crash"):
        run()
    monkeypatch.setattr(os, "replace", real)
    assert evals_in(ck) == 8  # the first checkpoint, whole
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind
    res = search(checkpoint=str(ck), checkpoint_every=8)[2]()
    same(res, reference())


# ------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, match", [
    (dict(checkpoint_every=0), "`checkpoint_every` must be an int >= 1"),
    (dict(checkpoint_every=2.5), "`checkpoint_every` must be an int >= 1"),
    (dict(checkpoint=3), "`checkpoint` must be a file path"),
    (dict(checkpoint="/no/such/dir/ck.pt"), "`checkpoint`: the directory '/no/such/dir' of"),
])
def test_bad_checkpoint_options(kwargs, match, tmp_path):
    _, counter, run = search(**kwargs)
    with pytest.raises(ValueError, match=match):
        run()
    assert counter.calls == 0


def test_checkpoint_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`checkpoint` must be a file path, got the directory"):
        search(checkpoint=str(tmp_path))[2]()


def test_global_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    from agents.core.checkpoint import global_rng_state, set_global_rng_state

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    np.random.randn()  # leaves a cached Gaussian in NumPy's legacy state
    torch.save(global_rng_state(), tmp_path / "rng.pt")
    expect = random.random(), np.random.randn(), torch.rand(2)
    random.seed(6), np.random.seed(6), torch.manual_seed(6)
    set_global_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = random.random(), np.random.randn(), torch.rand(2)
    assert got[:2] == expect[:2] and torch.equal(got[2], expect[2])


# ------------------------------------------------------------------------------------------- ppo
PPO = {"n_envs": 2, "n_steps": 4, "n_epochs": 2}


def ppo_search(max_evals: int = 32, seed: int = 0, mode: str = "joint", env_kwargs=None, **kw):
    env, counter = make_env(mode, **(env_kwargs or {}))
    return env, counter, lambda: agents.search("ppo", env, max_evals, seed=seed, **{**PPO, **kw})


def same_ppo(a: agents.SearchResult, b: agents.SearchResult) -> None:
    assert (a.val_score, a.allocation, a.history, a.evals) == (b.val_score, b.allocation, b.history, b.evals)
    pa, pb = a.policy.model.policy.state_dict(), b.policy.model.policy.state_dict()
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("algo, kill, env_kwargs", [
    ("PPO", 19, None),
    ("A2C", 11, {"finetune_steps": 2}),  # the env copies' np_random seed the fine-tuning: restored, not reseeded
])
def test_ppo_killed_search_resumes_to_the_uninterrupted_result(tmp_path, algo, kill, env_kwargs):
    ref = ppo_search(algo=algo, env_kwargs=env_kwargs)[2]()
    ck = str(tmp_path / "ck.pt")
    _, counter, run = ppo_search(algo=algo, env_kwargs=env_kwargs, checkpoint=ck, checkpoint_every=5)
    killed_after(counter, kill)
    with pytest.raises(Killed):
        run()
    saved = evals_in(ck)
    assert 0 < saved <= kill

    _, counter, run = ppo_search(algo=algo, env_kwargs=env_kwargs, checkpoint=ck, checkpoint_every=5)
    res = run()
    assert counter.calls == 32 - saved
    assert res.extras["resumed_at"] == saved and res.evals == 32
    same_ppo(res, ref)

    # the finished search's checkpoint: nothing left to score, the same result
    _, counter, run = ppo_search(algo=algo, env_kwargs=env_kwargs, checkpoint=ck, checkpoint_every=5)
    same_ppo(run(), ref)
    assert counter.calls == 0


def test_ppo_checkpoint_of_another_seed_is_refused(tmp_path):
    ck = str(tmp_path / "ck.pt")
    ppo_search(checkpoint=ck, checkpoint_every=8)[2]()
    _, counter, run = ppo_search(seed=1, checkpoint=ck, checkpoint_every=8)
    with pytest.raises(CheckpointError, match="seed: 0 in the checkpoint, 1 now"):
        run()
    assert counter.calls == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(algo="SAC"), "`algo` must be PPO or A2C"),
    (dict(mode="sequential"), "joint mode"),
    (dict(vec_env="subproc"), "`vec_env` must be 'dummy'"),
])
def test_ppo_checkpoint_refuses_what_it_cannot_capture(tmp_path, kwargs, match):
    _, counter, run = ppo_search(checkpoint=str(tmp_path / "ck.pt"), **kwargs)
    with pytest.raises(ValueError, match=match):
        run()
    assert counter.calls == 0
