"""Can a layer-wise policy learn from search? Search's allocations on the training models, distilled into the policy.

REINFORCE from scratch with a few hundred evaluations finds allocations far from every rule (the recurrent matrix at
the cap, a head kept dense) that pretraining by REINFORCE on the zoo, a Gaussian around LAMP, rarely samples
(``allocations_vs_search/``). This experiment gives the policy those allocations as targets:

1. ``search``: on every model of the zoo's training split and every ``--targets`` value, REINFORCE with ``--budget``
   evaluations (validation only); the better of its allocation and LAMP's, on validation, is the example. Each
   example is appended to ``<out>/search_<i>.jsonl`` at once (``--shard i/n`` splits the work over processes; a killed
   run resumes, recomputing nothing).
2. ``fit``: the policy regresses its mean actions onto the examples' actions, both centred over the model's layers
   (the budget projection ignores a common shift), by Adam on all examples at once; every ``--check-every`` steps
   the zero-shot criterion of ``prune-rnn pretrain`` (mean raw validation score on the zoo's validation models at
   0.5, 0.7, 0.8, 0.9) is computed and the best policy is kept (``<out>/policy.pt``, ``<out>/fit.md``).
   ``--subset K --subset-seed S`` fits on the examples of K training models only (a learning curve over the size
   of the zoo; files tagged ``_modelsK_sS_pSEED``).

Nothing here reads a test split. ::

    python -m benchmarks distill_search           # both stages into benchmarks/results/distill_search
    python -m benchmarks.distill_search search --shard 0/2 --out runs/distill &
    python -m benchmarks.distill_search search --shard 1/2 --out runs/distill
    python -m benchmarks.distill_search fit --out runs/distill
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.core.results import append_jsonl
from benchmarks._meta import provenance, run_meta

SELECTION_TARGETS = (0.5, 0.7, 0.8, 0.9)


def train_tasks() -> list[Any]:
    from prune_env.tasks.zoo import make_zoo_task, zoo_names

    return [make_zoo_task(n, progress=False) for n in zoo_names("train", available_only=True)]


def search_example(task: Any, target: float, budget: int, seed: int) -> dict[str, Any]:
    """REINFORCE's allocation or LAMP's, whichever scores higher on validation."""
    import agents
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=target, device="cpu")
    lamp = agents.search("lamp", env, 1, seed=seed)
    found = agents.search("reinforce", env, budget, seed=seed, vector_envs=8)
    best = found if found.val_score > lamp.val_score else lamp
    return {"model": task.name, "target": target, "budget": budget, "seed": seed, "lamp_val": lamp.val_score,
            "search_val": found.val_score, "source": "search" if best is found else "lamp",
            "allocation": best.allocation}


def cmd_search(args: argparse.Namespace) -> int:
    i, n = (int(x) for x in args.shard.split("/"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / f"search_{i}.jsonl"
    done = {(e["model"], e["target"]) for e in map(json.loads, store.read_text().splitlines())} \
        if store.exists() else set()
    jobs = [(t, target) for t in train_tasks() for target in args.targets]
    for k, (task, target) in enumerate(jobs):
        if k % n != i or (task.name, target) in done:
            continue
        example = search_example(task, target, args.budget, args.seed)
        append_jsonl(store, example)
        print(f"{task.name} {target:g}: lamp {example['lamp_val']:.4f} search {example['search_val']:.4f}",
              flush=True)
    return 0


def examples_tensors(examples: list[dict[str, Any]], tasks: dict[str, Any], max_layers: int):
    """Observations (joint, padded to ``max_layers``) and target actions for each example."""
    import torch

    from prune_env import PruneRNNEnv
    from prune_env.envs.actions import sparsity_to_action
    from prune_env.envs.zoo import observation

    obs, acts = [], []
    for e in examples:
        env = PruneRNNEnv(tasks[e["model"]], target_sparsity=e["target"], device="cpu")
        env.reset(seed=0)
        obs.append(observation(env, max_layers, joint=True))
        a = np.zeros(max_layers)
        a[:env.num_layers] = sparsity_to_action([e["allocation"][n] for n in env.layer_names], env.max_sparsity)
        acts.append(a)
    return torch.as_tensor(np.stack(obs)), torch.as_tensor(np.stack(acts), dtype=torch.float32)


def centred_loss(policy: Any, obs, target):
    """Mean squared error between the policy's mean actions and the target actions, each centred over the valid
    layers of its model."""
    mu, valid = policy.means(obs)
    v = valid.float()
    n = v.sum(-1, keepdim=True).clamp_min(1)
    t_c = target - (target * v).sum(-1, keepdim=True) / n
    m_c = mu - (mu * v).sum(-1, keepdim=True) / n
    return (((m_c - t_c) ** 2) * v).sum() / v.sum()


def cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from agents.policies.layerwise import LayerwisePolicy, save, zero_shot_score
    from prune_env.tasks.zoo import make_zoo_task, zoo_names

    out = Path(args.out)
    examples = [json.loads(x) for f in sorted(out.glob("search_*.jsonl")) for x in f.read_text().splitlines()]
    if not examples:
        raise SystemExit(f"no search examples under {out}; run the `search` stage first")
    if args.subset:  # a learning curve over the number of training models
        names = sorted({e["model"] for e in examples})
        if not 1 <= args.subset <= len(names):
            raise SystemExit(f"--subset must be in [1, {len(names)}], got {args.subset}")
        keep = set(np.random.default_rng(args.subset_seed).choice(names, args.subset, replace=False).tolist())
        examples = [e for e in examples if e["model"] in keep]
    tag = f"_models{args.subset}_s{args.subset_seed}_p{args.seed}" if args.subset else ""
    torch.set_num_threads(1)
    meta = run_meta()
    tasks = {t.name: t for t in train_tasks()}
    validation = [make_zoo_task(n, progress=False) for n in zoo_names("validation", available_only=True)]
    max_layers = max(len(e["allocation"]) for e in examples)
    obs, target = examples_tensors(examples, tasks, max_layers)
    torch.manual_seed(args.seed)
    policy = LayerwisePolicy(hidden=args.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    rows = [{"step": 0, "loss": centred_loss(policy, obs, target).item(),
             "validation": zero_shot_score(policy, validation, SELECTION_TARGETS, "score")}]
    best = (rows[0]["validation"], {k: v.clone() for k, v in policy.state_dict().items()}, 0)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = centred_loss(policy, obs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.check_every == 0:
            score = zero_shot_score(policy, validation, SELECTION_TARGETS, "score")
            rows.append({"step": step, "loss": loss.item(), "validation": score})
            print(f"step {step}: loss {loss.item():.4f} validation {score:.4f}", flush=True)
            if score > best[0]:
                best = (score, {k: v.clone() for k, v in policy.state_dict().items()}, step)
    policy.load_state_dict(best[1])
    wall = time.perf_counter() - t0
    save(policy, out / f"policy{tag}.pt", {**meta, "distilled_from": sorted({e["model"] for e in examples}),
                                     "examples": len(examples), "selected_after_steps": best[2],
                                     "validation_zero_shot": best[0], "wall_time_s": wall})
    improved = sum(e["source"] == "search" for e in examples)
    lines = ["# Distilling search into the layer-wise policy", "", provenance(meta), "",
             f"{len(examples)} examples ({improved} where REINFORCE beat LAMP on validation) from "
             f"{len({e['model'] for e in examples})} training models at targets "
             f"{sorted({e['target'] for e in examples})}; mean validation gain of the examples over LAMP: "
             f"{np.mean([max(e['search_val'], e['lamp_val']) - e['lamp_val'] for e in examples]):.4f}. Fit: "
             f"{args.steps} Adam steps (lr {args.learning_rate}, hidden {args.hidden}, seed {args.seed}), "
             f"{wall:.0f} s.", "",
             "Zero-shot criterion (mean raw validation score over the zoo's validation models at 0.5, 0.7, 0.8, 0.9;"
             " step 0 is the untrained policy, i.e. LAMP):", "",
             "| step | fit loss | validation |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['loss']:.4f} | {r['validation']:.4f}"
              + (" (**selected**)" if r["step"] == best[2] else "") + " |" for r in rows]
    from agents.core.results import write_text

    write_text(out / f"fit{tag}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("search", help="search allocations on the training models")
    s.add_argument("--targets", type=float, nargs="+", default=list(SELECTION_TARGETS))
    s.add_argument("--budget", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shard", default="0/1", help="i/n: this process does every n-th job from the i-th")
    s.add_argument("--out", required=True)
    f = sub.add_parser("fit", help="fit the policy to the search examples, select on validation")
    f.add_argument("--steps", type=int, default=600)
    f.add_argument("--check-every", type=int, default=50)
    f.add_argument("--learning-rate", type=float, default=3e-3)
    f.add_argument("--hidden", type=int, default=64)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--subset", type=int, default=0, help="fit on the examples of this many training models only")
    f.add_argument("--subset-seed", type=int, default=0, help="which models --subset draws")
    f.add_argument("--out", required=True)
    args = p.parse_args(argv)
    return cmd_search(args) if args.stage == "search" else cmd_fit(args)


if __name__ == "__main__":
    sys.exit(main())
