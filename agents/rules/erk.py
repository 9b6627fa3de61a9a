"""``erk``: the Erdős–Rényi-Kernel allocation (ERK; Evci et al., "Rigging the Lottery: Making All Tickets
Winners", ICML 2020, after Mocanu et al. 2018). No learning; one evaluation.

Each layer keeps a fraction of its weights (its density) proportional to

    ``(fan_in + fan_out) / (fan_in * fan_out)``

for a 2-D weight of shape ``(fan_out, fan_in)`` (an ``nn.Embedding`` weight ``(num_embeddings, dim)`` takes the
same formula on its shape; in general ``sum(shape) / prod(shape)``, the kernel form). Small layers are kept
denser than large ones, and the weights themselves play no part in the allocation. The constant is set so the
total kept weights meet the target; a layer whose scaled density would exceed 1 is kept dense and the others are
scaled up again, until no layer exceeds 1 (RigL's iteration, which is the solution of
``sum_i n_i * min(c * d_i, 1) = kept`` for ``c``). Layers are also held within the env's caps (density at least
``1 - max_sparsity``). Within a layer the env's own ``criterion`` decides which weights go.
"""

from __future__ import annotations

from typing import Any

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import allocation_of, caps, target_of, total_count
from prune_env.pruning.rules import erk_counts, erk_weights

SPEC = AgentSpec(name="erk", run="agents.rules.erk:run", evals=1, deterministic=True, batching=False,
                 description="ERK (Evci et al. 2020): layer density proportional to (fan_in+fan_out)/(fan_in*fan_out) "
                             "(1 evaluation)",
                 granularities=("unstructured",), rival_order=2)

__all__ = ["erk_weights", "run"]  # erk_weights lives in prune_env.pruning.rules (the zoo observation uses it too)


def run(env: EvalCap, seed: int, sparsity: float | None = None) -> dict[str, Any]:
    """Allocate sparsity by ERK and submit it.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`); unstructured granularity.
    :param seed: unused (deterministic).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    :raises ValueError: at ``granularity="hidden_unit"`` (ERK allocates weights, not units).
    """
    base = env.unwrapped
    if base.analysis.plan is not None:
        raise ValueError("lamp/erk rank weights; use unstructured granularity (agent 'erk')")
    target = target_of(env, sparsity)
    counts = erk_counts(base.analysis, total_count(env, target), caps(env))
    dense = [n for n, c in zip(base.layer_names, counts) if c == 0]
    capped = [n for n, c, k in zip(base.layer_names, counts, caps(env)) if c == k and k > 0]
    submit(env, allocation_of(env, counts))
    return {"dense_layers": dense, "capped_layers": capped}
