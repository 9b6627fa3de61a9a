"""Models whose weights the env used to skip: what it prunes now, the sparsity of the whole model, and the one-shot
rules' test scores with and without the new layer adapters.

Two small models, trained here on one CPU thread (seconds to a couple of minutes):

- ``sru-char``: a character LM on the pydoc-char text (``emb`` -> ``sru.SRU`` 2 x 128 -> ``head``; about 81 % of
  its parameters are in the SRU's transposed ``rnn_lst.{k}.weight``), trained ``--sru-steps`` Adam steps;
- ``lstm-attn``: an LSTM + ``nn.MultiheadAttention`` classifier on the digits rows (LSTM 64 -> 4-head
  self-attention -> mean over time -> head), trained ``--attn-epochs`` epochs.

For each, at ``--target`` and for LAMP and ERK (one evaluation each, selected on validation; test scores
reported): ``without adapter``, the env as it was before the model's adapter existed (the adapter is unregistered
for that env, so those weights stay dense, as they did), and ``with adapter``. Each row records
``overall_sparsity`` (the prunable weights), ``model_sparsity`` (every weight tensor of two or more dimensions, as
the env reports it) and the zeros actually counted in the pruned model, the coverage report, and the sparsity of
``attn.in_proj_weight``. The pruned ``with adapter`` LAMP model is then exported weights-only and loaded into a
freshly built model (and, for ``lstm-attn``, exported in full and loaded with ``classes=[AttentionClassifier]``):
its test score must not change.

Step cost: the env's one per-step addition (``model_sparsity`` from the counts) timed against a whole
``reset`` + ``step`` on the digits preset.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.coverage_models
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks._meta import default_out, provenance, run_meta, write_results

NAME = "coverage"


class SRULanguageModel(nn.Module):
    """Embedding -> ``sru.SRU`` (time-major inside) -> linear head, batch-first outside."""

    def __init__(self, vocab: int, emb: int = 64, hidden: int = 128, layers: int = 2):
        super().__init__()
        import sru

        self.emb = nn.Embedding(vocab, emb)
        self.sru = sru.SRU(emb, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.sru(self.emb(x).transpose(0, 1))
        return self.head(h.transpose(0, 1))


class AttentionClassifier(nn.Module):
    """LSTM -> multi-head self-attention -> mean over time -> linear head."""

    def __init__(self, features: int = 8, hidden: int = 64, heads: int = 4, classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a.mean(1))


def sru_task(steps: int, seed: int):
    from prune_env import RNNTask
    from prune_env.tasks.pydoc_char import load_text
    from prune_env.tasks.scoring import ChunkedScorer, contiguous_windows, spaced_windows
    from prune_env.tasks.training import BatchLoss, seeded, train_lm

    text = load_text()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n = ids.numel()
    n_test = n_val = int(n * 0.05)
    train, val, test = ids[:n - n_val - n_test], ids[n - n_val - n_test:n - n_test], ids[n - n_test:]
    seq = 64
    with seeded(seed):
        model = SRULanguageModel(len(chars))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Running SRU on CPU with grad_enabled")
        seconds = train_lm(model, train, steps=steps, seq_len=seq, batch=32, lr=6e-3, seed=seed, progress=False,
                           desc="sru-char")
    model.eval()
    loss_x, loss_y = spaced_windows(train, 64, seq)
    task = RNNTask(model, eval_batch=spaced_windows(val, 128, seq), metric="accuracy",
                   test=ChunkedScorer(*contiguous_windows(test, seq, 16384), "accuracy"),
                   loss=BatchLoss(loss_x, loss_y), name="sru-char")
    return task, seconds, lambda: SRULanguageModel(len(chars))


def attention_task(epochs: int, seed: int):
    from prune_env import RNNTask
    from prune_env.tasks.digits import load_splits
    from prune_env.tasks.scoring import ChunkedScorer
    from prune_env.tasks.training import BatchLoss, seeded

    splits = load_splits(0, 0.2, 0.2)
    x, y = splits["train"]
    with seeded(seed):
        model = AttentionClassifier()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    total = epochs * -(-x.shape[0] // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=1e-3)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    seconds = time.perf_counter() - t0
    task = RNNTask(model, eval_batch=splits["val"], metric="accuracy", test=ChunkedScorer(*splits["test"], "accuracy"),
                   loss=BatchLoss(x[:256], y[:256]), name="lstm-attn")
    return task, seconds, AttentionClassifier


def _sru_cell() -> type:
    import sru

    return sru.SRUCell


def measure(task, target: float, rules: list[str], without: type | None) -> dict[str, Any]:
    """The rules' rows on a fresh view of ``task`` (its own analysis), with ``without``'s adapter unregistered."""
    import dataclasses

    import agents as A
    from prune_env import PruneRNNEnv
    from prune_env.pruning.adapters import adapter_for, register_adapter, unregister_adapter
    from prune_env.pruning.coverage import CoverageWarning, matrix_zeros, removed_matrix_weights
    from prune_env.task import split_score

    view = dataclasses.replace(task)
    saved = None
    if without is not None:
        probe = next(m for m in task.model.modules() if isinstance(m, without))
        saved = adapter_for(probe)
        unregister_adapter(without)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CoverageWarning)
            env = PruneRNNEnv(view, target_sparsity=target, device="cpu")
        warned = [str(w.message) for w in caught if issubclass(w.category, CoverageWarning)]
        rows = []
        for rule in rules:
            res = A.search(rule, env, max_evals=1, seed=0)
            counts = env.counts_for(res.allocation)
            pruned = env.pruned_model(res.allocation)
            zeros, total = matrix_zeros(pruned)
            rows.append({"rule": rule, "val_score": res.val_score,
                         "test_score": split_score(task.test(pruned), "test")[0],
                         "overall_sparsity": float(counts.sum() / env.numels.sum()),
                         "model_sparsity": env.coverage.model_sparsity(removed_matrix_weights(env.kind, counts)),
                         "counted_zero_share": zeros / total,
                         "in_proj_weight_sparsity": res.allocation.get("attn.in_proj_weight")})
        return {"adapter": without is None, "coverage": env.coverage.as_dict(), "warning": warned,
                "dense_val": env.dense_score, "layers": env.layer_names, "rows": rows, "env": env}
    finally:
        if saved is not None:
            register_adapter(without, saved)


def round_trip(task, env, build, full_classes: list[type] | None) -> dict[str, Any]:
    """Export the LAMP model weights-only (and in full with ``full_classes``); load; score the test split."""
    import agents as A
    from prune_env import export, load
    from prune_env.task import split_score

    res = A.search("lamp", env, max_evals=1, seed=0)
    pruned = env.pruned_model(res.allocation)
    before = split_score(task.test(pruned), "test")[0]
    out: dict[str, Any] = {"test_before": before}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.prnn"
        out["weights_only_bytes"] = export(pruned, path, weights_only=True)
        out["weights_only_test"] = split_score(task.test(load(path, model=build())), "test")[0]
        if full_classes is not None:
            path = Path(tmp) / "m.prnn"
            out["full_bytes"] = export(pruned, path)
            out["full_test"] = split_score(task.test(load(path, classes=full_classes)), "test")[0]
    return out


def step_cost(reps: int) -> dict[str, Any]:
    """Median wall time of ``reset`` + ``step`` on digits, and of the one per-step addition alone."""
    import numpy as np

    from prune_env import PruneRNNEnv
    from prune_env.pruning.coverage import removed_matrix_weights
    from prune_env.tasks import make_task

    env = PruneRNNEnv(make_task("digits", progress=False), target_sparsity=0.9, device="cpu")
    rng = np.random.default_rng(0)
    steps, added = [], []
    for _ in range(reps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        t0 = time.perf_counter()
        env.reset()
        env.step(action)
        steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        env.coverage.model_sparsity(removed_matrix_weights(env.kind, env.counts))
        added.append(time.perf_counter() - t0)
    return {"task": "digits", "reps": reps, "step_ms": round(1000 * statistics.median(steps), 4),
            "model_sparsity_us": round(1e6 * statistics.median(added), 3)}


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Coverage of models the env used to skip, at {result['target']:g}", "",
             provenance(result["meta"]), ""]
    for m in result["models"]:
        lines += [f"## {m['name']}", "",
                  f"Dense: val {m['dense_val']:.4f}, test {m['dense_test']:.4f}; {m['params']} parameters; "
                  f"trained in {m['train_s']:.1f} s.", "",
                  "| adapter | rule | test | val | overall_sparsity | model_sparsity | zeros counted | "
                  "in_proj_weight sparsity | dense matrices (share) |", "|---|---|---|---|---|---|---|---|---|"]
        for part in m["runs"]:
            dense = ", ".join(f"`{d['name']}` ({d['share']:.1%})" for d in part["coverage"]["dense"]) or "none"
            for r in part["rows"]:
                ip = r["in_proj_weight_sparsity"]
                lines.append(f"| {'with' if part['adapter'] else 'without'} | {r['rule']} | {r['test_score']:.4f} | "
                             f"{r['val_score']:.4f} | {r['overall_sparsity']:.4f} | {r['model_sparsity']:.4f} | "
                             f"{r['counted_zero_share']:.4f} | {'-' if ip is None else f'{ip:.4f}'} | {dense} |")
        rt = m["round_trip"]
        lines += ["", f"Export/load of the LAMP model (with adapter): test {rt['test_before']:.4f}; weights-only file "
                  f"{rt['weights_only_bytes']} bytes, loaded into a new model: test {rt['weights_only_test']:.4f}"
                  + (f"; full file {rt['full_bytes']} bytes, loaded with classes=[...]: test {rt['full_test']:.4f}"
                     if "full_test" in rt else "") + ".", ""]
    sc = result["step_cost"]
    lines += ["## Step cost", "",
              f"digits, median of {sc['reps']}: reset + step {sc['step_ms']:.3f} ms; the per-step model_sparsity "
              f"from the counts {sc['model_sparsity_us']:.2f} us.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=float, default=0.8)
    p.add_argument("--rules", nargs="+", default=["lamp", "erk"])
    p.add_argument("--sru-steps", type=int, default=600)
    p.add_argument("--attn-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-reps", type=int, default=200)
    p.add_argument("--out", default=default_out(NAME))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result: dict[str, Any] = {"meta": run_meta(), "target": args.target, "rules": args.rules, "models": []}
    from prune_env.task import split_score

    for name, make, kind in (("sru-char", lambda: sru_task(args.sru_steps, args.seed), _sru_cell),
                             ("lstm-attn", lambda: attention_task(args.attn_epochs, args.seed),
                              lambda: nn.MultiheadAttention)):
        task, seconds, build = make()
        runs = [measure(task, args.target, args.rules, kind()), measure(task, args.target, args.rules, None)]
        trip = round_trip(task, runs[1]["env"], build, [AttentionClassifier] if name == "lstm-attn" else None)
        for r in runs:
            del r["env"]
        result["models"].append({"name": name, "params": sum(q.numel() for q in task.model.parameters()),
                                 "train_s": round(seconds, 1), "dense_val": runs[1]["dense_val"],
                                 "dense_test": split_score(task.test(copy.deepcopy(task.model)), "test")[0],
                                 "runs": runs, "round_trip": trip})
    result["step_cost"] = step_cost(args.step_reps)
    out = write_results(args.out, result, _markdown(result))
    print(_markdown(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
