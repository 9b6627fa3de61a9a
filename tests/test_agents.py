"""Agents: the hard evaluation cap, what each agent's registry record claims, determinism, the custom-policy
protocol and bad options."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from agent_helpers import FAST, NAMES, SPECS, counted_env
from tiny import tiny_task

import agents
from agents import registry
from agents.core.cap import EvalCap, split_max_evals
from prune_env import PruneRNNEnv
from prune_env.pruning import allocation as B


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
