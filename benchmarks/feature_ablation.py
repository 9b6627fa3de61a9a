"""Which observation columns say where search departs from LAMP: a feature ablation on validation models only.

For every validation model (zoo-v1's validation split, and zoo-v2's validation models already in their cache) and
target, on one operator (default ``magnitude:obs``: magnitude order, least-squares reconstruction):

1. **Search signal.** From LAMP's allocation ``a0`` (the layer-wise policy's start), ``--pairs`` antithetic
   Gaussian perturbations ``a0 +- sigma * eps`` are scored (validation reward, the env's projection onto the target),
   with the same draws for every case (common random numbers). The per-layer REINFORCE gradient at LAMP,
   ``g_l = mean (r+ - r-) eps_l / (2 sigma)``, centred over the layers (the projection ignores a common shift), says
   which layers search would prune more (``g_l > 0``) or less than LAMP. The best perturbation's departure from
   LAMP's sparsities is kept too.
2. **Rank correlation.** For every column of the format-4 zoo observation (:data:`prune_env.envs.zoo.ROW_V4`), the
   Spearman correlation with ``g`` across the layers of each case, averaged over cases (with its standard error
   and the share of cases with a positive sign), and the same with the rank-linear part of LAMP's share removed
   (what a column says beyond the share the policy starts from).
3. **A one-step policy per feature group.** Leave-one-model-out ridge regression of the standardised ``g`` on a
   group of columns (a compact base of rule, size and kind columns, or every format-3 column, each alone and with
   the new groups); the held-out model's LAMP action is moved by ``eta`` along the centred, standardised
   prediction and scored once. Gains are summarised on rewards clipped to [0, 1].
   ``oracle`` moves along the case's own ``g`` (in-sample: an upper reference, not a policy).

No test split is read anywhere; the features read training batches only (:mod:`prune_env.pruning.layer_features`).
Each finished case is kept in ``<out>/cases.json``, so a killed run resumes.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.feature_ablation --v1-cache /tmp/prc_cache \\
        --v2-cache /work/cache
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._meta import default_out, operator_kwargs, provenance, run_meta, write_results
from prune_env.io import atomic_write

NAME = "feature_ablation"
GROUPS = {
    "recon": ("recon_error", "recon_error_obs"),
    "owl": ("owl_share",),
    "alpha": ("alpha_hill",),
    "loss": ("loss_increase", "loss_share"),
    "role": ("role_input", "role_recurrent", "role_projection", "role_attention", "role_head", "role_embedding"),
}


def _models(v1_cache: str | None, v2_cache: str | None, limit: int | None) -> list[tuple[str, str]]:
    """(zoo name, cache dir) of every validation model already built (nothing is trained here)."""
    from prune_env.tasks.cache import CacheMissError, no_training
    from prune_env.tasks.zoo import make_zoo_task, zoo_names

    out = []
    for version, cache in (("v1", v1_cache), ("v2", v2_cache)):
        if not cache:
            continue
        os.environ["PRUNE_RNN_CACHE"] = cache
        for name in zoo_names("validation", version=version):
            try:
                with no_training():
                    make_zoo_task(name, progress=False)
            except (CacheMissError, ValueError) as e:
                print(f"skip {name}: {type(e).__name__}: {str(e)[:80]}", flush=True)
                continue
            out.append((name, cache))
    return out[:limit] if limit else out


def _load(name: str, cache: str):
    from prune_env.tasks.cache import no_training
    from prune_env.tasks.zoo import make_zoo_task

    os.environ["PRUNE_RNN_CACHE"] = cache
    with no_training():
        return make_zoo_task(name, progress=False)


def _env(task, target: float, op: str):
    from prune_env import PruneRNNEnv

    return PruneRNNEnv(task, target_sparsity=target, mode="joint", device="cpu", **operator_kwargs(op))


def _score(env, action: np.ndarray) -> tuple[float, float, np.ndarray]:
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
    return float(reward), float(info["score"]), env.counts / env.numels


def search_case(task, target: float, op: str, pairs: int, sigma: float, seed: int) -> dict[str, Any]:
    """Features and the antithetic search signal at LAMP for one (model, target)."""
    from prune_env.envs.zoo import ROW_V4, observation
    from prune_env.pruning.layer_features import layer_curves, raw_features

    t0 = time.perf_counter()
    env = _env(task, target, op)
    env.reset(seed=0)
    n = env.num_layers
    rows = observation(env, joint=True, observation_format=4)[:-8].reshape(n, len(ROW_V4))
    feat_s = time.perf_counter() - t0
    lamp = rows[:, ROW_V4.index("lamp")].astype(np.float64)
    a0 = 2.0 * lamp - 1.0
    raw = raw_features(layer_curves(env.analysis, task, env.reconstruct), lamp * env.max_sparsity)
    r0, s0, lamp_sp = _score(env, a0)
    rng = np.random.default_rng(seed)
    g = np.zeros(n)
    best = (r0, s0, lamp_sp)
    t1 = time.perf_counter()
    for _ in range(pairs):
        eps = rng.standard_normal(n)
        plus, minus = _score(env, a0 + sigma * eps), _score(env, a0 - sigma * eps)
        g += (plus[0] - minus[0]) * eps / (2 * sigma * pairs)
        best = max(best, plus, minus, key=lambda x: x[0])
    return {"model": task.name, "target": target, "operator": op, "layers": env.layer_names,
            "rows": rows.astype(float).tolist(), "raw": {k: np.asarray(v, float).tolist() for k, v in raw.items()},
            "a0": a0.tolist(), "lamp_reward": r0, "lamp_score": s0, "lamp_sparsity": lamp_sp.tolist(),
            "g": (g - g.mean()).tolist(), "best_reward": best[0], "best_score": best[1],
            "best_departure": (best[2] - lamp_sp).tolist(), "evals": 1 + 2 * pairs,
            "feature_s": round(feat_s, 2), "search_s": round(time.perf_counter() - t1, 2)}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def correlations(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ROW_V4 column: the mean over cases of the within-case Spearman correlation with ``g`` (and with the
    best perturbation's departure), its standard error and the share of cases with a positive sign."""
    from prune_env.envs.zoo import ROW_V4

    out = []
    for j, col in enumerate(ROW_V4):
        if col in ("chosen", "valid"):
            continue
        rho = np.array([_spearman(np.array(c["rows"])[:, j], np.array(c["g"])) for c in cases])
        rho_b = np.array([_spearman(np.array(c["rows"])[:, j], np.array(c["best_departure"])) for c in cases])
        rho_p = np.array([_partial(np.array(c["rows"])[:, j], np.array(c["g"]),
                                   np.array(c["rows"])[:, ROW_V4.index("lamp")]) for c in cases])
        ok = np.isfinite(rho)
        out.append({"column": col, "new": col not in _format3(), "cases": int(ok.sum()),
                    "rho_g": float(np.mean(rho[ok])) if ok.any() else None,
                    "se": float(np.std(rho[ok], ddof=1) / np.sqrt(ok.sum())) if ok.sum() > 1 else None,
                    "positive": float(np.mean(rho[ok] > 0)) if ok.any() else None,
                    "rho_best": float(np.nanmean(rho_b)) if np.isfinite(rho_b).any() else None,
                    "rho_given_lamp": float(np.nanmean(rho_p)) if np.isfinite(rho_p).any() else None})
    return out


def _partial(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman correlation of ``x`` and ``y`` with the (rank-)linear part of ``z`` removed from both."""
    from scipy.stats import rankdata

    if np.ptp(x) == 0 or np.ptp(y) == 0 or len(x) < 4:
        return float("nan")
    rz = np.stack([np.ones(len(z)), rankdata(z)], 1)

    def resid(v: np.ndarray) -> np.ndarray:
        r = rankdata(v)
        return r - rz @ np.linalg.lstsq(rz, r, rcond=None)[0]

    rx, ry = resid(x), resid(y)
    if np.ptp(rx) < 1e-9 or np.ptp(ry) < 1e-9:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _format3() -> tuple[str, ...]:
    from prune_env.envs.zoo import ROW

    return ROW


#: A compact base for the one-step policies: the rules' allocations, sizes, depth and kind (the full format-3 row
#: has more columns than a few validation models have layers).
BASE = ("lamp", "erk", "global", "obd", "obd_share", "param_share", "log_rows", "log_cols", "depth",
        "kind_embedding", "kind_input-hidden", "kind_hidden-hidden", "kind_linear")


def _columns(group: str) -> list[str]:
    head, _, extra = group.partition("+")
    base = list(BASE) if head == "base" else [c for c in _format3() if c not in ("chosen", "valid")]
    if not extra:
        return base
    return base + [c for g in (GROUPS if extra == "all" else {extra: GROUPS[extra]}).values() for c in g]


def _z(v: np.ndarray) -> np.ndarray:
    s = v.std()
    return (v - v.mean()) / s if s > 0 else v * 0.0


def predictions(cases: list[dict[str, Any]], group: str, ridge: float) -> list[np.ndarray]:
    """Leave-one-model-out ridge predictions of each case's standardised ``g`` from ``group``'s columns."""
    from prune_env.envs.zoo import ROW_V4

    idx = [ROW_V4.index(c) for c in _columns(group)]
    xs = [np.array(c["rows"])[:, idx] for c in cases]
    ys = [_z(np.array(c["g"])) for c in cases]
    preds = []
    for k, c in enumerate(cases):
        train = [i for i, o in enumerate(cases) if o["model"] != c["model"]]
        x = np.concatenate([xs[i] for i in train])
        y = np.concatenate([ys[i] for i in train])
        mu, sd = x.mean(0), x.std(0)
        sd[sd == 0] = 1.0
        xn = (x - mu) / sd
        w = np.linalg.solve(xn.T @ xn + ridge * np.eye(xn.shape[1]), xn.T @ y)
        preds.append(((xs[k] - mu) / sd) @ w)
    return preds


def step_policies(tasks: dict[str, Any], cases: list[dict[str, Any]], groups: list[str], etas: list[float],
                  ridge: float) -> list[dict[str, Any]]:
    """Score LAMP moved by ``eta`` along each group's held-out prediction (and the in-sample ``oracle``)."""
    rows = []
    preds = {g: predictions(cases, g, ridge) for g in groups}
    for k, c in enumerate(cases):
        env = _env(tasks[c["model"]], c["target"], c["operator"])
        a0 = np.array(c["a0"])
        for g in [*groups, "oracle"]:
            d = _z(np.array(c["g"])) if g == "oracle" else _z(preds[g][k])
            rho = _spearman(d, np.array(c["g"])) if g != "oracle" else 1.0
            for eta in etas:
                r, s, _ = _score(env, a0 + eta * d)
                rows.append({"model": c["model"], "target": c["target"], "group": g, "eta": eta, "reward": r,
                             "score": s, "gain": r - c["lamp_reward"], "rho_pred_g": rho,
                             "clipped_gain": float(np.clip(r, 0, 1) - np.clip(c["lamp_reward"], 0, 1))})
    return rows


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    a, cases = result["args"], result["cases"]
    models = sorted({c["model"] for c in cases})
    lines = ["# Feature ablation: which layer features say where search departs from LAMP", "",
             provenance(result["meta"]), "",
             f"Validation models only ({len(models)}): {', '.join(models)}. Targets {a['targets']}; operator "
             f"`{a['operator']}`; {a['pairs']} antithetic pairs at sigma {a['sigma']} per case "
             f"({1 + 2 * a['pairs']} evaluations), {len(cases)} cases, {sum(len(c['g']) for c in cases)} layers. "
             "Reward = validation score relative to dense. No test split is read.", "",
             "## Search signal at LAMP", "",
             "| model | target | layers | LAMP reward | best of perturbations | feature s | search s |",
             "|---|---|---|---|---|---|---|"]
    for c in cases:
        lines.append(f"| {c['model']} | {c['target']} | {len(c['g'])} | {c['lamp_reward']:.4f} | "
                     f"{c['best_reward']:.4f} | {c['feature_s']} | {c['search_s']} |")
    lines += ["", "## Rank correlation with the REINFORCE gradient at LAMP (within case, mean over cases)", "",
              "Positive: the larger the column, the more search wants the layer pruned beyond LAMP's share.", "",
              "| column | new | cases | mean rho(g) | s.e. | share > 0 | mean rho(g) given lamp | "
              "mean rho(best departure) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["correlations"], key=lambda r: -abs(r["rho_g"] or 0)):
        if r["rho_g"] is None:
            continue
        lines.append(f"| {r['column']} | {'yes' if r['new'] else ''} | {r['cases']} | {_f(r['rho_g'], '+.3f')} | "
                     f"{_f(r['se'], '.3f')} | {_f(r['positive'], '.2f')} | {_f(r.get('rho_given_lamp'), '+.3f')} | "
                     f"{_f(r['rho_best'], '+.3f')} |")
    lines += ["", "## One-step policies: LAMP moved along a leave-one-model-out prediction of g", "",
              f"Ridge {a['ridge']} on standardised columns; `base` = {', '.join(BASE)}; `format3` = every format-3 "
              "column. Gains in reward clipped to [0, 1] (a regression model's reward can fall far below 0 and would "
              "dominate a raw mean); the raw mean is given too.", "",
              "| group | eta | mean clipped gain | s.e. | median | share > 0 | raw mean gain | mean rho(pred, g) |",
              "|---|---|---|---|---|---|---|---|"]
    steps = result["steps"]
    for g in dict.fromkeys(r["group"] for r in steps):
        for eta in a["etas"]:
            rs = [r for r in steps if r["group"] == g and r["eta"] == eta]
            gain = np.array([r["clipped_gain"] for r in rs])
            raw = np.mean([r["gain"] for r in rs])
            rho = np.nanmean([r["rho_pred_g"] for r in rs])
            se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else None
            lines.append(f"| {g} | {eta} | {gain.mean():+.4f} | {_f(se, '.4f')} | {np.median(gain):+.4f} | "
                         f"{np.mean(gain > 0):.2f} | {raw:+.4f} | {_f(rho, '+.3f')} |")
    lines += ["", "`oracle` moves along the case's own measured g (in-sample, uses that case's evaluations): an upper "
              "reference, not a policy. Every other row predicts g for a model from the other models only."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--v1-cache", default=None, help="PRUNE_RNN_CACHE holding zoo-v1's validation models")
    p.add_argument("--v2-cache", default=None, help="PRUNE_RNN_CACHE holding zoo-v2's (those built are used)")
    p.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--operator", default="magnitude:obs", help="criterion:reconstruct of the env")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--sigma", type=float, default=0.3)
    p.add_argument("--etas", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--ridge", type=float, default=30.0)
    p.add_argument("--limit", type=int, default=None, help="at most this many models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out(NAME))
    args = p.parse_args(argv)
    meta = run_meta(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "cases.json"
    cases = json.loads(partial.read_text()) if partial.exists() else []
    done = {(c["model"], c["target"], c["operator"]) for c in cases}
    tasks = {}
    for name, cache in _models(args.v1_cache, args.v2_cache, args.limit):
        tasks[name] = task = _load(name, cache)
        for target in args.targets:
            if (task.name, target, args.operator) in done:
                continue
            cases.append(search_case(task, target, args.operator, args.pairs, args.sigma, args.seed))
            c = cases[-1]
            print(f"{c['model']} {target}: lamp {c['lamp_reward']:.4f} best {c['best_reward']:.4f} "
                  f"({c['feature_s']} s features, {c['search_s']} s search)", flush=True)
            atomic_write(partial, json.dumps(cases))
    cases = [c for c in cases if c["model"] in tasks and c["target"] in args.targets
             and c["operator"] == args.operator]
    groups = ["base", *(f"base+{g}" for g in GROUPS), "base+all", "format3", "format3+all"]
    result = {"meta": meta, "args": vars(args), "cases": cases, "correlations": correlations(cases),
              "steps": step_policies(tasks, cases, groups, args.etas, args.ridge)}
    write_results(out, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
