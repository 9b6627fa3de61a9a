"""Agents: the hard evaluation cap, what each agent's registry record claims, determinism, the custom-policy
protocol, and a learning test."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tiny import tiny_task
from torch import nn

import agents
from agents import registry
from agents.core.cap import EvalCap, split_max_evals
from agents.policies.policy import play
from agents.rules.shared import global_threshold_counts
from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning import allocation as B
from prune_env.pruning.layers import find_prunable_layers, get_param

#: Options that keep an agent fast on the tiny task (agents not named here run with their defaults).
FAST = {"ppo": {"n_envs": 2, "n_steps": 4, "n_epochs": 2}}
#: Every registered agent that runs without an optional extra (``rllib-ppo`` needs Ray: tests/test_rllib.py).
SPECS = [s for s in registry.specs() if not s.extras]
NAMES = [s.name for s in SPECS]
ONE_SHOT = [s.name for s in SPECS if s.one_shot]


class CountingEvaluate:
    """Wraps ``task.evaluate`` and counts calls: the ground truth the budget is checked against."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        return self.fn(model)

    def __deepcopy__(self, memo):
        return self  # env copies made by vectorized agents (in-process) share the one counter


def counted_env(mode: str = "joint", target: float = 0.6, **task_kwargs) -> tuple[PruneRNNEnv, CountingEvaluate]:
    task = tiny_task(**task_kwargs)
    counter = CountingEvaluate(task.evaluate)
    task.evaluate = counter
    env = PruneRNNEnv(task, target_sparsity=target, mode=mode, device="cpu")
    counter.calls = 0  # the env's dense-score evaluation is not the agent's
    return env, counter


# -------------------------------------------------------------------------------------------- max_evals
@pytest.mark.parametrize("name", NAMES)
def test_agent_end_to_end_uses_the_evaluations_its_record_states(name):
    """An agent uses exactly its record's ``evals`` (1 for a one-shot rule), or all of ``max_evals``."""
    spec = registry.get_spec(name)
    env, counter = counted_env()
    before = {k: v.clone() for k, v in env.task.model.state_dict().items()}
    max_evals = 13
    res = agents.search(name, env, max_evals, seed=0, **FAST.get(name, {}))
    assert counter.calls == res.evals == (spec.evals if spec.evals is not None else max_evals)
    assert len(res.history) == res.evals
    finite = [h for h in res.history if np.isfinite(h)]
    assert finite == sorted(finite) and finite[-1] == res.val_score
    counts = env.counts_for(res.allocation)
    assert counts.sum() == B.target_count(0.6, env.numels)
    assert all(0 <= s <= env.max_sparsity + 1e-9 for s in res.allocation.values())
    after = env.task.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the user's model was mutated"


@pytest.mark.parametrize("name", NAMES)
def test_sequential_mode_respects_max_evals(name):
    env, counter = counted_env(mode="sequential")
    res = agents.search(name, env, 11, seed=0, **FAST.get(name, {}))
    assert counter.calls == res.evals <= 11
    assert env.counts_for(res.allocation).sum() == B.target_count(0.6, env.numels)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("max_evals", [1, 2])
def test_tiny_max_evals(name, max_evals):
    env, counter = counted_env()
    res = agents.search(name, env, max_evals, seed=0, **FAST.get(name, {}))
    assert counter.calls == res.evals <= max_evals
    assert env.counts_for(res.allocation).sum() == B.target_count(0.6, env.numels)


def test_ppo_budget_exact_when_rollouts_overshoot():
    # 3 envs x 8 steps = 24 steps per rollout; 10 evaluations end mid-rollout.
    env, counter = counted_env()
    res = agents.search("ppo", env, 10, seed=0, n_envs=3, n_steps=8, n_epochs=1)
    assert counter.calls == res.evals == 10


@pytest.mark.parametrize("algo", ["A2C", "SAC", "TD3"])
def test_other_sb3_algorithms_respect_the_cap(algo):
    env, counter = counted_env()
    res = agents.search("ppo", env, 10, seed=0, algo=algo, n_envs=2, n_steps=4, batch_size=4)
    assert counter.calls == res.evals == len(res.history) == 10
    assert res.extras["algo"] == algo
    assert env.counts_for(res.allocation).sum() == B.target_count(0.6, env.numels)
    assert all(0 <= s <= env.max_sparsity + 1e-9 for s in res.allocation.values())


class FileCountingEvaluate:
    """Wraps ``task.evaluate`` and appends one byte to ``path`` per call, so scorings in worker processes count."""

    def __init__(self, fn, path: str):
        self.fn = fn
        self.path = path

    def __call__(self, model):
        with open(self.path, "ab") as f:
            f.write(b".")
        return self.fn(model)

    @property
    def calls(self) -> int:
        with open(self.path, "rb") as f:
            return len(f.read())


def test_ppo_subproc_vec_env_respects_the_cap(tmp_path):
    """vec_env="subproc": the env copies are scored in spawned workers; the cap holds there too (one small run)."""
    task = tiny_task()
    counter = FileCountingEvaluate(task.evaluate, str(tmp_path / "calls"))
    task.evaluate = counter
    env = PruneRNNEnv(task, target_sparsity=0.6, device="cpu")
    (tmp_path / "calls").write_bytes(b"")  # the env's dense-score evaluation is not the agent's
    res = agents.search("ppo", env, 7, seed=0, vec_env="subproc", n_envs=2, n_steps=4, n_epochs=1)
    assert counter.calls == res.evals == len(res.history) == 7
    assert env.counts_for(res.allocation).sum() == B.target_count(0.6, env.numels)


def test_eval_cap_stops_scoring():
    env, counter = counted_env()
    wrapped = EvalCap(env, 2)
    wrapped.reset(seed=0)
    for _ in range(5):
        wrapped.reset()
        _, reward, terminated, _, info = wrapped.step(env.action_space.sample())
        assert terminated
    assert counter.calls == 2 and wrapped.used == 2
    assert info == {"over_max_evals": True, "over_budget": True} and reward == 0.0


def test_split_max_evals_exact():
    assert split_max_evals(10, 3) == [4, 3, 3]
    assert sum(split_max_evals(1000, 7)) == 1000


def test_budget_keyword_is_a_deprecated_alias_of_max_evals():
    env, _ = counted_env()
    new = agents.search("random", env, max_evals=3, seed=1)
    with pytest.warns(DeprecationWarning, match="max_evals"):
        old = agents.search("random", env, budget=3, seed=1)
    assert old.evals == new.evals == 3 and old.allocation == new.allocation
    with pytest.raises(TypeError, match="max_evals"):
        agents.search("random", env, 3, budget=3)
    with pytest.raises(TypeError, match="max_evals"):
        agents.search("random", env)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name):
    results = []
    for _ in range(2):
        env, _ = counted_env()
        results.append(agents.search(name, env, 12, seed=3, **FAST.get(name, {})))
    assert results[0].allocation == results[1].allocation
    np.testing.assert_array_equal(results[0].history, results[1].history)  # NaN (nothing eligible yet) == NaN


def test_different_seeds_differ():
    env, _ = counted_env()
    a = agents.search("random", env, 5, seed=0).history
    b = agents.search("random", env, 5, seed=1).history
    assert a != b


# ----------------------------------------------------------------------------------------- global RNGs
def _global_rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _assert_same_rng_states(before: dict, after: dict) -> None:
    assert after["python"] == before["python"], "Python's global RNG changed"
    (kind_b, keys_b, *rest_b), (kind_a, keys_a, *rest_a) = before["numpy"], after["numpy"]
    assert kind_a == kind_b and np.array_equal(keys_a, keys_b) and rest_a == rest_b, "NumPy's global RNG changed"
    assert torch.equal(after["torch"], before["torch"]), "torch's global CPU RNG changed"
    if "cuda" in before:
        assert all(torch.equal(a, b) for a, b in zip(after["cuda"], before["cuda"], strict=True)), \
            "torch's global CUDA RNG changed"


class ZeroPolicy:
    """The trivial custom policy: the middle of the action range, every step."""

    def __init__(self, env: PruneRNNEnv):
        self.shape = env.action_space.shape

    def act(self, obs, info):
        return np.zeros(self.shape, dtype=np.float32)


class DrawsThenFails:
    """A policy that consumes every global RNG, then raises: search must still restore them."""

    def act(self, obs, info):
        random.random(), np.random.rand(), torch.rand(1)
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        raise RuntimeError("policy failed")


@pytest.mark.parametrize("name", NAMES)
def test_search_leaves_global_rngs_alone(name):
    env, counter = counted_env()
    options = {"policy": ZeroPolicy(env)} if name == "policy" else FAST.get(name, {})
    random.seed(1234), np.random.seed(1234), torch.manual_seed(1234)
    before = _global_rng_states()
    res = agents.search(name, env, 4, seed=0, **options)
    _assert_same_rng_states(before, _global_rng_states())
    assert counter.calls == res.evals <= 4


def test_search_restores_global_rngs_on_error():
    env, _ = counted_env()
    random.seed(1234), np.random.seed(1234), torch.manual_seed(1234)
    before = _global_rng_states()
    with pytest.raises(RuntimeError, match="policy failed"):
        agents.search("policy", env, 2, seed=0, policy=DrawsThenFails())
    _assert_same_rng_states(before, _global_rng_states())


# -------------------------------------------------------------------------------------------- heuristics
def test_global_threshold_is_the_greedy_rule():
    rng = np.random.default_rng(0)
    scores = [rng.random(7), rng.random(5) * 0.1, rng.random(9)]
    cap = np.array([7, 3, 9])
    counts = global_threshold_counts(scores, 8, cap)
    # Brute force: repeatedly take the smallest remaining score whose layer has room.
    pool = sorted((s, i) for i, arr in enumerate(scores) for s in arr)
    expect = np.zeros(3, dtype=int)
    for _, i in pool:
        if expect.sum() == 8:
            break
        if expect[i] < cap[i]:
            expect[i] += 1
    assert counts.tolist() == expect.tolist()
    assert counts[1] == 3  # the layer of small weights is held at its cap


def test_global_matches_magnitude_threshold_when_uncapped():
    env, _ = counted_env(target=0.3)
    res = agents.search("global", env, 1)
    w = np.concatenate([get_param(env.task.model, layer).detach().abs().reshape(-1).numpy()
                        for layer in env.layers])
    thr = np.sort(w)[B.target_count(0.3, env.numels) - 1]
    for layer in env.layers:
        lw = get_param(env.task.model, layer).detach().abs().reshape(-1).numpy()
        assert res.allocation[layer.name] == pytest.approx(float((lw <= thr).mean()), abs=1.5 / lw.size)


def test_gradient_prunes_small_gradient_layers_harder():
    env, _ = counted_env(target=0.5)
    res = agents.search("gradient", env, 1)
    g = {n: s["grad_mean"] for n, s in zip(env.layer_names, env.layer_stats)}
    lo, hi = min(g, key=g.get), max(g, key=g.get)
    assert res.allocation[lo] > res.allocation[hi]
    res_g = agents.search("gradient", env, 1, variant="global")
    assert env.counts_for(res_g.allocation).sum() == B.target_count(0.5, env.numels)


def test_heuristics_penalty_mode_need_sparsity():
    env = PruneRNNEnv(tiny_task(), device="cpu")
    with pytest.raises(ValueError, match="sparsity"):
        agents.search("uniform", env, 1)
    res = agents.search("uniform", env, 1, sparsity=0.5)
    assert all(s == pytest.approx(0.5, abs=0.02) for s in res.allocation.values())


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"name": "nope", "max_evals": 3}, "unknown agent"),
    ({"name": "random", "max_evals": 0}, "max_evals"),
    ({"name": "random", "max_evals": 2.5}, "max_evals"),
    ({"name": "random", "max_evals": True}, "max_evals"),
    ({"name": "random", "max_evals": 3, "seed": -1}, "seed"),
    ({"name": "reinforce", "max_evals": 3, "learning_rte": 0.1}, "learning_rte"),
    ({"name": "ppo", "max_evals": 3, "algo": "DQN"}, "algo"),
    ({"name": "ppo", "max_evals": 3, "vec_env": "ray"}, "vec_env"),
    ({"name": "gradient", "max_evals": 3, "variant": "x"}, "variant"),
    ({"name": "policy", "max_evals": 3, "policy": 42}, "policy"),
])
def test_bad_arguments(kwargs, match):
    env, _ = counted_env()
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        agents.search(name, env, **kwargs)


def test_gradient_needs_loss():
    task = tiny_task()
    task.loss = None
    env = PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    with pytest.raises(ValueError, match="loss"):
        agents.search("gradient", env, 2)


# ------------------------------------------------------------------------------------------ custom policy
class KeepHeadDense:
    """Prune everything but the head; learns nothing, counts what it observes."""

    def __init__(self, env: PruneRNNEnv):
        self.env = env
        self.seen: list[float] = []

    def act(self, obs, info):
        return self.env.action_for({n: (0.0 if n == "head.weight" else 0.9) for n in self.env.layer_names})

    def observe(self, reward, info):
        self.seen.append(reward)


def test_custom_policy_protocol():
    env, counter = counted_env()
    policy = KeepHeadDense(env)
    assert isinstance(policy, agents.Policy)
    res = agents.search("policy", env, 4, policy=policy)
    assert res.evals == counter.calls == 4 and len(policy.seen) == 4
    assert res.allocation["head.weight"] < 0.6 < res.allocation["rnn.weight_hh_l0"]
    assert agents.search("policy", env, 4, policy=policy, episodes=1).evals == 1


@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_trained_policy_save_load(tmp_path, name):
    env, _ = counted_env()
    path = str(tmp_path / ("policy.zip" if name == "ppo" else "policy.pt"))
    res = agents.search(name, env, 8, seed=0, save_path=path, **FAST.get(name, {}))
    module = __import__(f"agents.searchers.{name}", fromlist=["load"])
    loaded = module.load(path, env=env) if name == "ppo" else module.load(path)
    obs, info = env.reset()
    np.testing.assert_allclose(loaded.act(obs, info), res.policy.act(obs, info), atol=1e-6)
    assert not list(tmp_path.glob("*.tmp*")), "a temporary file was left behind"


# -------------------------------------------------------------------------------------------- learning
class _SynModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.head = nn.Linear(8, 12)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[0])


class SyntheticScore:
    """``1 - 4 * mean((s - s*)^2)`` over per-layer sparsities read off the model (count of zeros): optimum 1."""

    def __init__(self, optimum: np.ndarray):
        self.optimum = optimum

    def __call__(self, model: nn.Module) -> float:
        s = np.array([float((get_param(model, layer) == 0).float().mean()) for layer in find_prunable_layers(model)])
        return float(1.0 - 4.0 * np.mean((s - self.optimum) ** 2))


def synthetic_env(mode: str = "joint", target: float = 0.5) -> PruneRNNEnv:
    """A real PruneRNNEnv whose score is a known smooth function of the allocation, maximal at a known point."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _SynModel().eval()
    numels = np.array([layer.numel for layer in find_prunable_layers(model)])
    # A lopsided optimum, moved onto the budget with the env's own projection, so it is exactly reachable.
    want = np.array([0.9, 0.1, 0.8, 0.2])
    optimum = B.project_to_target(want, numels, B.target_count(target, numels), B.caps(numels, 0.98)) / numels
    task = RNNTask(model, evaluate=SyntheticScore(optimum), test=SyntheticScore(optimum), name="synthetic")
    return PruneRNNEnv(task, target_sparsity=target, mode=mode, device="cpu")


MARGIN = 0.03  # the learned policy's own (deterministic) allocation must score >= 1 - MARGIN


def _policy_score(env: PruneRNNEnv, res: agents.SearchResult) -> float:
    """Score of the trained policy's deterministic allocation, outside the search budget."""
    return play(env, res.policy)[1]["score"]


@pytest.mark.parametrize("name, kwargs", [("reinforce", {}), ("ppo", {"n_envs": 4})])
def test_learning_reaches_known_optimum(name, kwargs):
    env = synthetic_env()
    uniform = agents.search("uniform", env, 1).val_score
    assert uniform < 1 - 10 * MARGIN, "the synthetic task must separate learning from uniform pruning"
    res = agents.search(name, env, 240, seed=0, **kwargs)
    assert _policy_score(env, res) >= 1 - MARGIN
    assert res.val_score >= 1 - MARGIN


@pytest.mark.parametrize("name, kwargs", [("reinforce", {"learning_rate": 0.0}),
                                          ("ppo", {"n_envs": 4, "learning_rate": 0.0})])
def test_learning_test_fails_an_agent_that_learns_nothing(name, kwargs):
    env = synthetic_env()
    res = agents.search(name, env, 240, seed=0, **kwargs)
    assert _policy_score(env, res) < 1 - MARGIN


@pytest.mark.parametrize("kwargs, ablation", [({"init_mean": "uniform"}, None),
                                              ({"batch_size": 16, "init_std": 0.5},
                                               {"advantage": "rank", "mirrored": True})])
def test_reinforce_options_still_learn(kwargs, ablation):
    from agents.searchers.reinforce import _Ablation

    env = synthetic_env()
    private = {"_ablation": _Ablation(**ablation)} if ablation else {}
    res = agents.search("reinforce", env, 240, seed=0, **kwargs, **private)
    assert _policy_score(env, res) >= 1 - MARGIN


@pytest.mark.parametrize("knob", [{"advantage": "rank"}, {"mirrored": True}, {"std_learning_rate": 0.02},
                                  {"joint_hidden": 64}, {"center": False}])
def test_reinforce_ablation_knobs_are_not_options(knob):
    """Knobs without a measured gain are not ``Args``; the ablation benchmarks reach them through ``_Ablation``."""
    from agents.searchers.reinforce import _Ablation

    env, counter = counted_env()
    with pytest.raises(ValueError, match=next(iter(knob))):
        agents.search("reinforce", env, 4, seed=0, **knob)
    res = agents.search("reinforce", env, 4, seed=0, _ablation=_Ablation(**knob))
    assert res.evals == counter.calls == 4


def test_reinforce_ablation_checks_its_knobs():
    from agents.searchers.reinforce import _Ablation

    for bad in ({"advantage": "x"}, {"mirrored": 1}, {"center": "yes"}, {"std_learning_rate": -1.0},
                {"joint_hidden": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _Ablation(**bad)
    env, _ = counted_env()
    with pytest.raises(ValueError, match="_ablation"):
        agents.search("reinforce", env, 2, _ablation={"advantage": "rank"})


@pytest.mark.parametrize("init_mean", ["mid", "uniform"])
def test_reinforce_starts_at_uniform_pruning(init_mean):
    env = synthetic_env(target=0.9)
    res = agents.search("reinforce", env, 8, seed=0, learning_rate=0.0, init_mean=init_mean)
    start = play(env, res.policy)[1]["layer_sparsity"]
    uniform = agents.search("uniform", env, 1).allocation
    assert start == pytest.approx(uniform, abs=2e-3)


def test_rank_advantage_is_measured_from_the_baseline():
    from agents.searchers.reinforce import _advantages

    adv = _advantages(np.array([0.1, 0.3, 0.2, 0.3]), 0.25, "rank")
    np.testing.assert_allclose(adv, [-0.5, 0.375, -0.25, 0.375])  # ties share a rank; above b: positive
    assert (_advantages(np.array([0.5, 0.6]), 0.0, "rank") > 0).all()


def test_reinforce_learns_in_sequential_mode():
    env = synthetic_env(mode="sequential")
    res = agents.search("reinforce", env, 300, seed=0)
    assert _policy_score(env, res) >= 1 - 2 * MARGIN


@pytest.mark.parametrize("name", ["random", "reinforce"])
def test_vector_envs_same_result_same_budget(name):
    from prune_env import PruneRNNVectorEnv

    env, counter = counted_env()
    plain = agents.search(name, env, 10, seed=0)
    counter.calls = 0
    PruneRNNVectorEnv(env.task, num_envs=4, target_sparsity=0.6, device="cpu", autoreset_mode="Disabled")
    setup = counter.calls  # the vector env's own dense score and probe: calibration, not candidates
    counter.calls = 0
    batched = agents.search(name, env, 10, seed=0, vector_envs=4)  # 2 batched passes of 4, then 2 single
    assert batched.evals == 10 and len(batched.history) == 10
    # Batched passes bypass task.evaluate; a vector env that found one-by-one scoring faster uses it. Either way
    # no candidate is scored twice and none past the budget.
    assert 2 <= counter.calls - setup <= 10
    assert batched.allocation == plain.allocation
    np.testing.assert_allclose(batched.history, plain.history, atol=1e-5)


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_ppo_on_the_batched_vector_env_matches_plain_ppo(mode):
    """vector_envs=K: PPO steps one PruneRNNVectorEnv (SB3VecEnv) instead of K wrapped env copies."""
    env, counter = counted_env(mode=mode)
    opts = {"n_steps": 2, "n_epochs": 1}
    plain = agents.search("ppo", env, 8, seed=0, n_envs=4, **opts)
    batched = agents.search("ppo", env, 8, seed=0, vector_envs=4, **opts)
    assert batched.evals == 8 and len(batched.history) == 8
    assert batched.allocation == pytest.approx(plain.allocation, abs=1e-6)
    np.testing.assert_allclose(batched.history, plain.history, atol=1e-5)
    odd = agents.search("ppo", env, 6, seed=0, vector_envs=4, **opts)  # the last round ends 2 episodes too many
    assert odd.evals == 6 and len(odd.history) == 6
    with pytest.raises(ValueError, match="vec_env"):
        agents.search("ppo", env, 6, seed=0, vector_envs=4, vec_env="subproc")


@pytest.mark.parametrize("batched", [True, False])
def test_ppo_on_the_vector_env_never_scores_past_the_cap(monkeypatch, batched):
    """search("ppo", env, max_evals=20, vector_envs=8) scores at most 20 candidates: 8 + 8 + 4, the last round's other
    4 episodes end unscored. Counted where the vector env scores (batched pass or each sub-env's evaluate)."""
    from prune_env import PruneRNNVectorEnv

    scored = []
    original = PruneRNNVectorEnv._score

    def counting(self, ended):
        scored.append(len(ended))
        return original(self, ended)

    monkeypatch.setattr(PruneRNNVectorEnv, "_score", counting)
    if not batched:
        monkeypatch.setattr(PruneRNNVectorEnv, "_choose_path", lambda self, b, m: ("sequential", "test"))
    env, _ = counted_env()
    result = agents.search("ppo", env, 20, seed=0, vector_envs=8, n_steps=2, n_epochs=1)
    assert sum(scored) == 20 and max(scored) <= 8
    assert result.evals == 20 and len(result.history) == 20


def test_heuristics_read_the_shared_analysis(monkeypatch):
    """The gradient baseline reuses the gradients of the env's analysis (never recomputes them), and the heuristics'
    caps are the env's, hidden-unit floor included (every recurrent layer keeps one unit)."""
    from agents.rules import shared as _alloc
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(tiny_task("gru", hidden=8), granularity="hidden_unit", target_sparsity=0.8, max_sparsity=1.0)
    assert (_alloc.caps(env) == env.numels - 1).all()
    flat = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.8)
    def recomputed(*a, **k):
        pytest.fail("recomputed gradients")

    monkeypatch.setattr("prune_env.pruning.criteria.compute_gradients", recomputed)
    monkeypatch.setattr("prune_env.pruning.analysis.compute_gradients", recomputed)
    for variant in ("layer", "global"):
        result = agents.search("gradient", flat, 1, variant=variant)
        assert result.evals == 1
    result = agents.search("gradient", env, 1)
    assert max(result.allocation.values()) < 1.0


# ------------------------------------------------------------------------------------- the registry
def test_every_record_is_its_modules_own_and_names_are_unique():
    """The registry reads each module's ``SPEC`` from its source; importing the module gives the same record, and
    the run function lives in that module."""
    import importlib

    specs = registry.specs()
    assert len({s.name for s in specs}) == len(specs)
    assert {"uniform", "global", "gradient", "lamp", "erk", "obd", "random", "sensitivity", "reinforce", "ppo",
            "policy", "rllib-ppo"} <= set(registry.names())
    for spec in SPECS:
        module_name, func = spec.run.split(":")
        module = importlib.import_module(module_name)
        assert module.SPEC == spec and callable(getattr(module, func))
        assert agents.get_agent(spec.name) is getattr(module, func)
    assert dict(agents.AGENTS) == {s.name: s.run for s in specs}
    assert dict(agents.DESCRIPTIONS) == {s.name: s.description for s in specs}
    assert registry.one_shot() == tuple(s.name for s in specs if s.evals == 1)
    assert {"uniform", "global", "gradient", "lamp", "erk", "obd"} <= set(registry.one_shot())
    assert "policy" not in registry.one_shot() and "sensitivity" not in registry.one_shot()


def test_suggested_max_evals():
    assert all(registry.get_spec(n).suggested_max_evals() == 1 for n in registry.one_shot())
    assert registry.get_spec("policy").suggested_max_evals() == 1  # zero-shot by default
    assert registry.get_spec("reinforce").suggested_max_evals() == 100


def test_discovery_imports_no_agent_module():
    """Listing the agents reads their records without importing them: no Stable-Baselines3, no Ray."""
    import subprocess
    import sys

    code = ("import sys, agents; from agents import registry; names = registry.names(); "
            "print(len(names), sorted(m for m in sys.modules if m.startswith(('agents.rules.', 'agents.searchers.')) "
            "or m.split('.')[0] in ('stable_baselines3', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    count, imported = out.stdout.split(" ", 1)
    assert int(count) == len(registry.specs()) and imported.strip() == "[]", out.stdout


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.deterministic])
def test_deterministic_agents_give_the_same_result_whatever_the_seed(name):
    a = agents.search(name, counted_env()[0], 12, seed=0, **FAST.get(name, {}))
    b = agents.search(name, counted_env()[0], 12, seed=7, **FAST.get(name, {}))
    assert a.allocation == b.allocation
    np.testing.assert_array_equal(a.history, b.history)


@pytest.mark.parametrize("name", NAMES)
def test_granularities_are_as_recorded(name):
    """An agent runs at every granularity its record lists and refuses the others with a clear error."""
    env = PruneRNNEnv(tiny_task("gru"), granularity="hidden_unit", target_sparsity=0.5, device="cpu")
    if "hidden_unit" in registry.get_spec(name).granularities:
        res = agents.search(name, env, 3, seed=0, **FAST.get(name, {}))
        assert 1 <= res.evals <= 3 and env.counts_for(res.allocation).sum() == B.target_count(0.5, env.numels)
    else:
        with pytest.raises(ValueError, match="unstructured granularity"):
            agents.search(name, env, 3, seed=0, **FAST.get(name, {}))


@pytest.mark.parametrize("name", NAMES)
def test_needs_loss_is_as_recorded(name):
    """An agent whose record says it needs a loss refuses a task without one; every other agent runs on it."""
    task = tiny_task()
    task.loss = None
    env = PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    if registry.get_spec(name).needs_loss:
        with pytest.raises(ValueError, match="loss"):
            agents.search(name, env, 3, seed=0, **FAST.get(name, {}))
    else:
        res = agents.search(name, env, 3, seed=0, **FAST.get(name, {}))
        assert env.counts_for(res.allocation).sum() == B.target_count(0.5, env.numels)


@pytest.mark.parametrize("name", NAMES)
def test_batching_is_as_recorded(name, monkeypatch):
    """``vector_envs=K`` builds a batched vector env exactly for the agents whose record says ``batching``."""
    from prune_env import PruneRNNVectorEnv

    built = []
    original = PruneRNNVectorEnv.__init__

    def counting(self, *a, **k):
        built.append(1)
        original(self, *a, **k)

    monkeypatch.setattr(PruneRNNVectorEnv, "__init__", counting)
    env, counter = counted_env()
    options = {"n_steps": 2, "n_epochs": 1} if name == "ppo" else FAST.get(name, {})
    res = agents.search(name, env, 8, seed=0, vector_envs=4, **options)
    assert res.evals <= 8
    assert bool(built) == registry.get_spec(name).batching


def test_default_rivals_follow_the_records():
    """The transfer policy's default rivals: the records with a ``rival_order``, in it, that fit the env."""
    from agents.policies.policy import default_rivals

    ordered = sorted((s for s in registry.specs() if s.rival_order is not None), key=lambda s: s.rival_order)
    assert default_rivals(counted_env()[0]) == tuple(s.name for s in ordered) == ("lamp", "erk", "global", "obd")
    hidden = PruneRNNEnv(tiny_task("gru"), granularity="hidden_unit", target_sparsity=0.5, device="cpu")
    assert default_rivals(hidden) == ()
    from agents.policies.policy import ONE_SHOT as one_shot_names
    from agents.policies.policy import RIVALS

    assert RIVALS == ("lamp", "erk", "global", "obd") and one_shot_names == registry.one_shot()


def test_register_a_new_agent(tmp_path):
    spec = registry.AgentSpec(name="first-layer-dense", run="tests_registry_rule:run", evals=1, deterministic=True,
                              batching=False, description="a test rule")
    assert "first-layer-dense" not in agents.AGENTS
    registry.register(spec)
    try:
        assert agents.AGENTS["first-layer-dense"] == "tests_registry_rule:run"
        assert "first-layer-dense" in registry.one_shot()
        registry.register(spec)  # the same record again: a no-op
        with pytest.raises(ValueError, match="already registered"):
            registry.register(registry.AgentSpec(name="lamp", run="x:run", evals=1, deterministic=True,
                                                 batching=False, description="another lamp"))
    finally:
        registry.unregister("first-layer-dense")
    assert "first-layer-dense" not in agents.AGENTS
    with pytest.raises(ValueError, match="unknown agent"):
        registry.get_spec("first-layer-dense")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"run": "no_colon"}, ValueError, "module:function"),
    ({"evals": 0}, ValueError, "evals"),
    ({"evals": None, "rival_order": 1}, ValueError, "one-shot"),
    ({"granularities": ("channel",)}, ValueError, "granularities"),
    ({"deterministic": 1}, TypeError, "deterministic"),
    ({"description": ""}, TypeError, "description"),
])
def test_agent_spec_checks_its_fields(kwargs, error, match):
    base = dict(name="x", run="m:run", evals=1, deterministic=True, batching=False, description="d")
    with pytest.raises(error, match=match):
        registry.AgentSpec(**{**base, **kwargs})


def test_declared_spec_reads_literals_only(tmp_path):
    good = tmp_path / "good.py"
    good.write_text('SPEC = AgentSpec(name="g", run="good:run", evals=1, deterministic=True, batching=False,\n'
                    '                 description="a" "b", granularities=("unstructured",))\n')
    assert registry.declared_spec(good) == registry.AgentSpec(
        name="g", run="good:run", evals=1, deterministic=True, batching=False, description="ab",
        granularities=("unstructured",))
    assert registry.declared_spec(tmp_path / "good.py") is not None
    (tmp_path / "none.py").write_text("X = 1\n")
    assert registry.declared_spec(tmp_path / "none.py") is None
    (tmp_path / "code.py").write_text('SPEC = AgentSpec(name=__import__("os").getcwd())\n')
    with pytest.raises(ValueError, match="literals"):
        registry.declared_spec(tmp_path / "code.py")


# ---------------------------------------------------------------------------------------- one-shot rules
@pytest.mark.parametrize("name", ONE_SHOT)
@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_one_shot_rules_use_one_evaluation_and_meet_the_target(name, mode):
    env, counter = counted_env(mode=mode, target=0.7)
    res = agents.search(name, env, 5, seed=0)
    assert counter.calls == res.evals == len(res.history) == 1
    counts = env.counts_for(res.allocation)
    assert counts.sum() == B.target_count(0.7, env.numels)
    assert (counts <= env.cap).all()


class _Linears(nn.Module):
    """Bias-free ``nn.Linear`` layers of the given ``(fan_out, fan_in)`` shapes, weights set by hand (or 1)."""

    def __init__(self, shapes, weights=None):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=False) for o, i in shapes)
        with torch.no_grad():
            for k, layer in enumerate(self.layers):
                layer.weight.copy_(torch.ones(layer.weight.shape) if weights is None
                                   else torch.as_tensor(weights[k], dtype=torch.float32).reshape(layer.weight.shape))


def _half(model: nn.Module) -> float:
    return 0.5


def linear_env(shapes, weights=None, target: float = 0.5, **env_kwargs) -> tuple[PruneRNNEnv, CountingEvaluate]:
    """A PruneRNNEnv on :class:`_Linears` with a constant score (the allocation is all these tests look at)."""
    counter = CountingEvaluate(_half)
    env = PruneRNNEnv(RNNTask(_Linears(shapes, weights), evaluate=counter, name="linears"), target_sparsity=target,
                      device="cpu", **env_kwargs)
    counter.calls = 0
    return env, counter


@pytest.mark.parametrize("target, expect", [(0.5, [2, 3]), (0.7, [3, 4])])
def test_lamp_scores_by_hand(target, expect):
    """Layer a: |w| = 1, 2, 3, 4, scores 1/30, 4/29, 9/25, 16/16. Layer b: six equal weights, scores (stable by
    index) 1/6, 1/5, 1/4, 1/3, 1/2, 1. Merged: a a b b b b a b a b. Global magnitude would take a: 1, b: 4 at 0.5."""
    a, b = [[-1.0, 2.0], [3.0, -4.0]], [[1.0] * 2] * 3
    env, counter = linear_env([(2, 2), (3, 2)], [a, b], target=target)
    res = agents.search("lamp", env, 3)
    assert counter.calls == res.evals == 1
    assert env.counts_for(res.allocation).tolist() == expect
    model = env.pruned_model(res.allocation)
    kept_a = model.layers[0].weight.detach().abs().reshape(-1)
    assert kept_a.tolist() == [0.0 if abs(w) <= expect[0] else abs(w) for w in (-1.0, 2.0, 3.0, -4.0)]
    from agents.rules.lamp import lamp_scores

    np.testing.assert_allclose(lamp_scores(np.array(a)), [1 / 30, 4 / 29, 9 / 25, 1.0])
    np.testing.assert_allclose(lamp_scores(np.array(b)), [1 / 6, 1 / 5, 1 / 4, 1 / 3, 1 / 2, 1.0])


ERK_SHAPES = [(20, 10), (40, 20), (4, 40)]  # (fan_out, fan_in); ERK weights 0.15, 0.075, 0.275


def test_erk_densities_proportional_to_fan_ratio():
    """At 0.8 no layer reaches density 1 or a cap: kept fraction = c * (fan_in + fan_out) / (fan_in * fan_out)."""
    env, counter = linear_env(ERK_SHAPES, target=0.8)
    res = agents.search("erk", env, 2)
    assert counter.calls == res.evals == 1
    counts = env.counts_for(res.allocation)
    assert counts.sum() == B.target_count(0.8, env.numels)
    d = np.array([(o + i) / (o * i) for o, i in ERK_SHAPES])
    c = (env.numels.sum() - counts.sum()) / (env.numels * d).sum()
    density = 1.0 - counts / env.numels
    assert (c * d < 1).all() and (counts < env.cap).all()
    assert (np.abs(density - c * d) <= 1.0 / env.numels).all(), (density, c * d)  # whole weights: one off at most
    assert res.extras == {"dense_layers": [], "capped_layers": []}


def test_erk_keeps_a_layer_dense_and_rescales_the_others():
    """At 0.5 the small layer's scaled density is 4.33 * 0.275 = 1.19: it stays dense, and the others share the
    580 kept weights left by 160 with c = 420 / 90: densities 0.7 and 0.35, i.e. 60 and 520 pruned."""
    env, _ = linear_env(ERK_SHAPES, target=0.5)
    res = agents.search("erk", env, 1)
    assert env.counts_for(res.allocation).tolist() == [60, 520, 0]
    assert res.extras["dense_layers"] == ["layers.2.weight"]


def _capped_env() -> PruneRNNEnv:
    """Three layers: a 128x128 of tiny weights plus one large (both rules want it past 98%), a 4x200 and a 16x16
    of weights in [1, 2] (ERK weights 0.255 and 0.125: different enough that sharing the rest in ERK proportion
    is not the common shift the env's projection would give an uncapped request)."""
    rng = np.random.default_rng(0)
    a = 1e-3 * (1 + rng.random(128 * 128))
    a[0] = 1.0
    weights = [a, 1 + rng.random(800), 1 + rng.random(256)]
    return linear_env([(128, 128), (4, 200), (16, 16)], weights, target=0.97, max_sparsity=0.98)[0]


def test_lamp_respects_the_caps_at_high_sparsity():
    """The tiny layer stops at its cap and the rest of the budget goes to the lowest LAMP scores of the others
    (brute-force greedy), not a common shift of the uncapped request."""
    from agents.rules.lamp import lamp_scores

    env = _capped_env()
    res = agents.search("lamp", env, 1)
    counts = env.counts_for(res.allocation)
    total = B.target_count(0.97, env.numels)
    pool = sorted((s, i) for i, w in enumerate(env.analysis.dense) for s in lamp_scores(w.numpy()))
    expect = np.zeros(3, dtype=int)
    for _, i in pool:
        if expect.sum() == total:
            break
        if expect[i] < env.cap[i]:
            expect[i] += 1
    assert counts[0] == env.cap[0] and counts.sum() == total and (counts <= env.cap).all()
    assert counts.tolist() == expect.tolist()
    assert res.extras["capped_layers"] == ["layers.0.weight"]


def test_erk_respects_the_caps_at_high_sparsity():
    """ERK would keep 1.66% of the 128x128 layer; it keeps 2% (its cap) and the other two share the rest in ERK
    proportion."""
    env = _capped_env()
    res = agents.search("erk", env, 1)
    counts = env.counts_for(res.allocation)
    assert counts[0] == env.cap[0] and counts.sum() == B.target_count(0.97, env.numels)
    assert (counts <= env.cap).all()
    d = np.array([256 / 16384, 204 / 800, 32 / 256])
    c = (env.numels[1:] - counts[1:]).sum() / (env.numels[1:] * d[1:]).sum()
    density = 1.0 - counts[1:] / env.numels[1:]
    assert (np.abs(density - c * d[1:]) <= 1.0 / env.numels[1:]).all(), (density, c * d[1:])
    assert res.extras["capped_layers"] == ["layers.0.weight"]


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_rules_penalty_mode_and_bad_arguments(name):
    env = PruneRNNEnv(tiny_task(), device="cpu")
    with pytest.raises(ValueError, match="sparsity"):
        agents.search(name, env, 1)
    res = agents.search(name, env, 1, sparsity=0.5)
    assert env.counts_for(res.allocation).sum() == B.target_count(0.5, env.numels)
    budgeted, _ = counted_env()
    with pytest.raises(ValueError, match="sparsity"):
        agents.search(name, budgeted, 1, sparsity=0.5)  # differs from the env's target 0.6
    with pytest.raises(ValueError, match="max_evals"):
        agents.search(name, budgeted, 0)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_options_are_value_errors(name):
    env, _ = counted_env()
    with pytest.raises(ValueError, match=rf"agent '{name}' got unknown options \['bogus'\]"):
        agents.search(name, env, 3, bogus=1)


def test_global_refuses_hidden_units_clearly():
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(tiny_task("gru"), granularity="hidden_unit", target_sparsity=0.5)
    with pytest.raises(ValueError, match="unstructured granularity"):
        agents.search("global", env, 1)
