"""From a trained RNN to a deployable compressed model in one call: search, gradual prune + fine-tune, export, report.

:func:`compress` (and ``prune-rnn compress``) runs four stages, each ending in files written atomically in the
output directory, so that a killed run restarts from its last finished stage:

1. **search** (``search.json``): an agent picks the per-layer allocation at the target sparsity (default: LAMP for
   ``unstructured``, uniform for ``hidden_unit``; one evaluation each) in a :class:`~prune_env.PruneRNNEnv` whose
   operator is ``operator`` (the env's ``criterion``: which weights of a layer go) and ``reconstruct`` (``"obs"``:
   the kept weights are re-fitted by least squares on training inputs, SparseGPT; Frantar and Alistarh, ICML
   2023). The one-shot model (that allocation under that operator, no fine-tuning; ``sequential``: re-fitted layer
   after layer on the inputs of the model pruned so far) is scored on validation and test.
2. **finetune** (``finetuned.pt``, ``finetune.json``): ``finetune_from="dense"``:
   :func:`prune_env.compression.gradual.gradual_prune` prunes a copy of the dense model gradually to that allocation
   while training it (Zhu & Gupta's cubic schedule; with ``operator`` other than magnitude and no ``criterion``, in
   the env's prune order); ``finetune_from="oneshot"``: the one-shot model is trained with its masks held fixed from
   the first step (:mod:`agents.cli.compress_oneshot`). Quantization-aware training (straight-through rounding)
   follows the ramp (from step 0 for ``"oneshot"``) when ``bits`` is given; the best validation checkpoint is kept.
   The weights are saved with ``torch.save`` of a plain ``state_dict`` (loaded back with ``weights_only=True``).
3. **export** (``model.prnn``, ``export.json``): :func:`prune_env.compression.export.export` writes the compressed file
   (sparse layout, ``bits``-bit values).
4. **report** (``report.md``, ``report.json``, ``report.png``): the exported file is loaded back with
   :func:`prune_env.compression.export.load` and scored; dense, one-shot and final are compared side by side on test
   score (and perplexity where the task reports it), validation score, bytes on disk, parameters and CPU latency.

The operator defaults (magnitude, no reconstruction, gradual from the dense model) were chosen on validation scores
(``benchmarks/compress_operators.py``). ``compress.json`` holds the settings. Rerunning with the same output directory
resumes: finished stages are skipped; different settings are refused (use a new directory). Each stage's JSON file is
sealed (:mod:`agents.cli.compress_stages`: the settings, the SHA-256 of the files the stage wrote, the seal of the
stage before it): a stage whose seal fails, edited, swapped or pickled, is redone with a warning, with every stage
after it, and nothing in it is loaded. The report recomputes every number it shows from the files it names
(:mod:`agents.cli.compress_report`). Before the first stage the model is checked to be exportable.

>>> import tempfile
>>> from prune_env.tasks import make_task
>>> task = make_task("digits", epochs=2, hidden=16, progress=False)
>>> with tempfile.TemporaryDirectory() as out:
...     report = compress(task, 0.8, out, steps=6, bits=8)
...     rows = report["rows"]
>>> round(rows["final"]["sparsity"], 3) >= 0.8 and rows["final"]["bytes"] < rows["dense"]["bytes"]
True
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.cli.compress_oneshot import FINETUNE_FROM, finetune_oneshot, masks_kept, oneshot_masks, oneshot_model
from agents.cli.compress_report import (
    OPERATOR_DEFAULTS,
    ReportError,
    build_report,
    plot,
    scores,
    subsample,
    write_report,
)
from agents.cli.compress_stages import STAGES, read_stage, write_stage

__all__ = ["FINETUNE_FROM", "OPERATORS", "STAGES", "CompressError", "add_parser", "cmd_compress", "compress",
           "default_agent"]
#: Settings that identify a run (a rerun must match them to resume).
_SETTINGS = ("task", "task_seed", "target_sparsity", "agent", "max_evals", "seed", "steps", "bits", "granularity", "lr",
             "method", "agent_options")
#: Values of ``operator``: the env's ranking criteria (wanda, obs: from the task's calibration inputs).
OPERATORS = ("magnitude", "gradient", "saliency", "wanda", "obs")


class CompressError(ValueError):
    """The output directory holds a run with other settings, or a stage's files are unreadable."""


def default_agent(granularity: str) -> str:
    """The agent :func:`compress` uses when none is given: LAMP (one evaluation, the strongest one-shot rule we
    measured) for ``unstructured``, uniform for ``hidden_unit`` (LAMP ranks single weights)."""
    return "lamp" if granularity == "unstructured" else "uniform"


def compress(task: Any, target_sparsity: float, out: str | os.PathLike, *, agent: str | None = None,
             max_evals: int | None = None, seed: int = 0, steps: int = 800, bits: int | None = None,
             granularity: str = "unstructured", lr: float = 3e-3, lr_schedule: str = "constant",
             select: str = "score", method: str = "linear", device: str = "cpu",
             agent_options: Mapping[str, Any] | None = None, latency_reps: int = 20, progress: bool = False,
             log: Callable[[str], None] | None = None, command: Sequence[str] | None = None,
             budget: int | None = None, criterion: str | None = None, regularizer: str | None = None,
             regularizer_strength: float = 0.1, regularizer_scope: str = "all", operator: str = "magnitude",
             reconstruct: str | None = None, finetune_from: str = "dense", sequential: bool = False) -> dict[str, Any]:
    """Compress ``task``'s model to ``target_sparsity`` (and ``bits``); write everything under ``out``.

    :param task: an :class:`~prune_env.RNNTask`, or a spec :func:`prune_env.tasks.resolve_task` understands (a
        preset, a zoo name, a corpus directory, ``module:function``).
    :param target_sparsity: the overall sparsity of the prunable weights (for ``hidden_unit``: of their weights,
        whole units removed), in ``(0, 1)``.
    :param out: the run directory (created; an existing one with the same settings is resumed).
    :param agent: the allocation agent (a key of :data:`agents.AGENTS`); default :func:`default_agent`.
    :param max_evals: the agent's evaluation cap; default 1 for one-shot rules, else 100.
    :param seed: seeds the agent and the fine-tuning batches.
    :param steps: fine-tuning steps (the pruning ramp takes the first half); 0 gives the one-shot model.
    :param bits: bits per value of the prunable weights (quantization-aware fine-tuning after the ramp, then an
        export at this width); ``None``: float32.
    :param granularity: ``"unstructured"`` or ``"hidden_unit"`` (physically smaller, faster model).
    :param lr: Adam learning rate of the fine-tuning.
    :param lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 after the ramp); see
        :func:`prune_env.compression.gradual.gradual_prune`.
    :param criterion: ``"movement"`` or ``"magnitude"`` (unstructured), ``regularizer``: ``"l1"`` (unstructured) or
        ``"group_lasso"`` (``hidden_unit``: ISS), ``regularizer_strength``, ``regularizer_scope`` (``"all"`` or
        ``"candidates"``): see :func:`prune_env.compression.gradual.gradual_prune` (sparsity learned while fine-tuning).
    :param operator: the search env's ranking criterion, one of :data:`OPERATORS` (``"wanda"``, ``"obs"``: from the
        task's calibration inputs, which must then exist).
    :param reconstruct: ``None`` (or ``"none"``) or ``"obs"``: the env's reconstruction of the kept weights, in the
        search's scores and the one-shot model.
    :param finetune_from: ``"dense"`` (the gradual ramp from the dense model) or ``"oneshot"`` (the one-shot model,
        reconstructed where ``reconstruct`` says, fine-tuned for ``steps`` with its masks fixed; unstructured, without
        ``criterion`` or ``regularizer``).
    :param sequential: with ``reconstruct="obs"``: the one-shot model is re-fitted layer after layer on the inputs
        of the model pruned so far (unstructured only).
    :param select: the fine-tuning checkpoint to keep: ``"score"`` (best validation score) or ``"nll"`` (lowest
        validation NLL: language models judged by perplexity).
    :param method: quantization method, ``"linear"`` or ``"kmeans"``.
    :param device: where to search and fine-tune.
    :param agent_options: extra options of the agent (see each agent module).
    :param latency_reps: timed forward passes per model for the latency figures (median reported).
    :param progress: progress bars.
    :param log: called with one line per stage (default: silent).
    :param command: the command line to record in the report (the CLI passes its own).
    :param budget: deprecated name of ``max_evals`` (a :class:`DeprecationWarning`).
    :returns: the report (also in ``report.json``).
    :raises ValueError: on a bad argument (the message names it); :class:`CompressError` for a directory that holds
        a run with other settings.
    """
    import agents as A
    from agents.core.results import run_meta
    from prune_env import PruneRNNEnv
    from prune_env.checks import check_choice, check_int, check_number
    from prune_env.tasks import resolve_task

    if budget is not None:
        if max_evals is not None:
            raise TypeError("compress() got both `max_evals` and its deprecated name `budget`; pass `max_evals` only")
        import warnings

        warnings.warn("compress(budget=...) is deprecated; use max_evals=...", DeprecationWarning, stacklevel=2)
        max_evals = budget
    meta = run_meta(list(command) if command else ["agents.cli.compress.compress"], warn=False)
    say = log or (lambda _msg: None)
    spec = task if isinstance(task, str) else getattr(task, "name", type(task).__name__)
    target = check_number("target_sparsity", target_sparsity, 0.0, 1.0, low_open=True, high_open=True)
    granularity = check_choice("granularity", granularity, ("unstructured", "hidden_unit"))
    agent = default_agent(granularity) if agent is None else agent
    if agent not in A.AGENTS:
        raise ValueError(f"`agent` must be one of {sorted(A.AGENTS)}, got {agent!r}")
    default = A.get_spec(agent).suggested_max_evals()  # 1 for one-shot rules and the zero-shot policy, else 100
    max_evals = default if max_evals is None else check_int("max_evals", max_evals, 1)
    seed = check_int("seed", seed, 0)
    steps = check_int("steps", steps, 0)
    if bits is not None:
        from prune_env.compression.quantize import BITS

        bits = check_choice("bits", check_int("bits", bits), tuple(b for b in BITS if b != 32))
    lr = check_number("lr", lr, 0.0, low_open=True)
    from prune_env.compression.gradual import LR_SCHEDULES, SELECT

    lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    select = check_choice("select", select, SELECT)
    from prune_env.compression.gradual import check_learned

    regularizer_strength = check_learned(granularity, criterion, regularizer, regularizer_strength,
                                         scope=regularizer_scope)
    method = check_choice("method", method, ("linear", "kmeans"))
    operator, reconstruct, finetune_from, sequential = _check_operator(granularity, operator, reconstruct,
                                                                       finetune_from, sequential, criterion,
                                                                       regularizer)
    latency_reps = check_int("latency_reps", latency_reps, 1)
    options = dict(agent_options or {})
    settings = {"task": spec, "task_seed": getattr(task, "metadata", {}).get("seed") if not isinstance(task, str)
                else None, "target_sparsity": target, "agent": agent, "max_evals": max_evals, "seed": seed,
                "steps": steps, "bits": bits, "granularity": granularity, "lr": lr, "method": method,
                "agent_options": options}
    settings.update({k: v for k, v in (("lr_schedule", lr_schedule), ("select", select), ("criterion", criterion),
                                       ("regularizer", regularizer), ("regularizer_strength", regularizer_strength),
                                       ("regularizer_scope", regularizer_scope),
                                       ("operator", operator), ("reconstruct", reconstruct),
                                       ("finetune_from", finetune_from), ("sequential", sequential))
                     if v != _LATER_DEFAULTS[k]})
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` must be a directory, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)

    if isinstance(task, str):
        task = resolve_task(task)
    env = PruneRNNEnv(task, target_sparsity=target, granularity=granularity, device=device, criterion=operator,
                      reconstruct=reconstruct)
    fingerprint = {"task_name": task.name, "dense_val": env.dense_score, "layers": list(env.layer_names),
                   "numels": [int(n) for n in env.numels]}
    _check_settings(out, settings, fingerprint)
    weights_only = _check_exportable(task.model, granularity)
    t_run = time.perf_counter()

    # ---- 1. search (a sealed record whose allocation meets the target, else redone)
    got = read_stage(out, "search", settings, None)
    if got is not None and not _meets_target(env, got[0]):
        _warn(f"{STAGES['search']}: its allocation does not meet the target {target}; redoing the search stage")
        got = None
    if got is None:
        say(f"[1/4] search: {agent}, max {max_evals} evaluations, target {target}, operator {operator}"
            + (f" + {reconstruct} reconstruction" if reconstruct else ""))
        t0 = time.perf_counter()
        res = A.search(agent, env, max_evals, seed=seed, **options)
        oneshot = oneshot_model(env, res.allocation, sequential)
        search = {"agent": agent, "max_evals": max_evals, "evals": res.evals, "allocation": res.allocation,
                  "counts": [int(c) for c in env.counts_for(res.allocation)], "operator": env.operator,
                  "one_shot": scores(task, oneshot), "wall_time_s": round(time.perf_counter() - t0, 3)}
        seal = write_stage(out, "search", search, settings)
    else:
        say("[1/4] search: done earlier, reused")
        search, seal = got
    allocation = search["allocation"]

    # ---- 2. gradual pruning with fine-tuning (quantization-aware with bits)
    got = read_stage(out, "finetune", settings, seal)
    model = _finetuned_model(env, out, search["counts"]) if got is not None else None
    if got is None or model is None:
        say(f"[2/4] finetune: {steps} steps from the {finetune_from} model, lr {lr}"
            + (f", {bits}-bit aware" if bits else ""))
        from prune_env.compression import gradual as G
        from prune_env.io import atomic_save_torch

        t0 = time.perf_counter()
        common = dict(steps=steps, lr=lr, seed=seed, bits=bits, method=method, lr_schedule=lr_schedule, select=select,
                      progress=progress)
        kept = None
        if finetune_from == "oneshot":
            masks = oneshot_masks(env, search["counts"])
            result = finetune_oneshot(env, oneshot_model(env, allocation, sequential), allocation, masks,
                                      device=device, **common)
            kept = masks_kept(result.model, masks)
            if not kept:
                raise CompressError("fine-tuning from the one-shot model revived weights its masks prune")
        else:
            result = G.gradual_prune(env, allocation, criterion=criterion, regularizer=regularizer,
                                     regularizer_strength=regularizer_strength,
                                     regularizer_scope=regularizer_scope, **common)
        atomic_save_torch({"state_dict": result.model.state_dict()}, out / "finetuned.pt")
        finetune = {"steps": steps, "from": finetune_from, "masks_kept": kept,
                    "best_step": result.step, "end": result.end, "val_score": result.score,
                    "curve": [[int(s), float(v)] for s, v in result.curve],
                    "loss_curve": subsample(result.losses, 200), "bits": result.bits, "info": result.info,
                    "wall_time_s": round(time.perf_counter() - t0, 3)}
        seal = write_stage(out, "finetune", finetune, settings, files=["finetuned.pt"], after=seal)
        model = None
    else:
        say("[2/4] finetune: done earlier, reused")
        finetune, seal = got

    # ---- 3. export (from the sealed finetuned.pt)
    got = read_stage(out, "export", settings, seal)
    if got is None:
        say(f"[3/4] export: {out / 'model.prnn'}")
        from prune_env.compression.export import export

        model = model or _finetuned_model(env, out, search["counts"])
        if model is None:
            raise CompressError(f"{out / 'finetuned.pt'} cannot be read back right after it was written")
        nbytes = export(model, out / "model.prnn", bits=bits, method=method, weights_only=weights_only)
        exported = {"path": "model.prnn", "bytes": nbytes, "bits": bits, "method": method,
                    "weights_only": weights_only}
        seal = write_stage(out, "export", exported, settings, files=["model.prnn"], after=seal)
    else:
        say("[3/4] export: done earlier, reused")
        exported, seal = got

    # ---- 4. report (every number recomputed from the files it names)
    got = read_stage(out, "report", settings, seal)
    if got is None:
        say("[4/4] report")
        try:
            report = build_report(task, env, out, settings, search, finetune, "model.prnn", latency_reps,
                                  oneshot_model(env, allocation, sequential), weights_only=weights_only)
        except ReportError as e:
            raise CompressError(str(e)) from None
        report["meta"] = meta
        report["wall_time_s"] = round(time.perf_counter() - t_run, 3)
        write_report(out, report)
        plot(out, report, finetune)
        write_stage(out, "report", report, settings, files=["report.md"], after=seal)
    else:
        say("[4/4] report: done earlier, reused")
        report = got[0]
    return report


# --------------------------------------------------------------------------------------------------- stages
def _check_operator(granularity: str, operator: str, reconstruct: str | None, finetune_from: str, sequential: bool,
                    criterion: str | None, regularizer: str | None) -> tuple[str, str | None, str, bool]:
    """The operator settings, checked together; :raises ValueError: naming the argument."""
    from prune_env.checks import check_choice
    from prune_env.pruning.reconstruction import check_reconstruct

    operator = check_choice("operator", operator, OPERATORS)
    reconstruct = check_reconstruct(reconstruct)
    finetune_from = check_choice("finetune_from", finetune_from, FINETUNE_FROM)
    if not isinstance(sequential, bool):
        raise TypeError(f"`sequential` must be a bool, got {type(sequential).__name__}")
    if sequential and (reconstruct is None or granularity != "unstructured"):
        raise ValueError("`sequential` needs reconstruct='obs' and granularity='unstructured'")
    if finetune_from == "oneshot":
        if granularity != "unstructured":
            raise ValueError("`finetune_from`='oneshot' needs granularity='unstructured'")
        if criterion is not None or regularizer is not None:
            raise ValueError("`finetune_from`='oneshot' holds the one-shot masks fixed: it takes no `criterion` or "
                             "`regularizer` (they choose what a gradual ramp from the dense model prunes)")
    return operator, reconstruct, finetune_from, sequential


def _check_settings(out: Path, settings: dict[str, Any], fingerprint: dict[str, Any] | None = None) -> None:
    from agents.core.results import write_json

    path = out / "compress.json"
    want = json.loads(json.dumps({"settings": settings, **({"model": fingerprint} if fingerprint else {})}))
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CompressError(f"{path} is unreadable ({e}); use a new `out` directory") from None
        old = dict(have.get("settings", {}))
        if "budget" in old and "max_evals" not in old:  # the name of earlier releases
            old["max_evals"] = old.pop("budget")
        have_s = {**_LATER_DEFAULTS, **old}
        want_s = {**_LATER_DEFAULTS, **want["settings"]}
        diff = ", ".join(f"{k}={have_s.get(k)!r} (now {want_s.get(k)!r})"
                         for k in dict.fromkeys([*want_s, *have_s]) if have_s.get(k) != want_s.get(k))
        if diff:
            raise CompressError(f"`out` {str(out)!r} holds a compress run with other settings: {diff}; "
                                "use a new directory to start afresh")
        if fingerprint is not None and "model" in have and have["model"] != want["model"]:
            raise CompressError(f"`out` {str(out)!r} holds a compress run of another model (the dense model or its "
                                "layers differ); use a new directory")
        if fingerprint is not None and "model" not in have:
            write_json(path, want)
    elif fingerprint is None:
        if any((out / f).exists() for f in STAGES.values()):
            raise CompressError(f"`out` {str(out)!r} holds stage files but no compress.json; use a new directory")
        write_json(path, want)
    else:
        write_json(path, want)


def _finetuned_model(env: Any, out: Path, counts: list[int]) -> nn.Module | None:
    """The fine-tuned model of stage 2, rebuilt from its plain ``state_dict`` (``torch.load(weights_only=True)``:
    a pickled object is refused); ``None``, with a warning, when the file does not hold one that fits."""
    import copy

    path = out / "finetuned.pt"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = copy.deepcopy(env.task.model).cpu()
        if env.granularity == "hidden_unit":  # the physically smaller architecture of those counts
            model = env.kind.materialize(model, np.asarray(counts), None, torch.device("cpu"))
        model.load_state_dict(payload["state_dict"])
    except Exception as e:  # a pickle that is not plain data, a truncated zip, tensors of another model
        _warn(f"{path.name} is not a fine-tuned state dict of this model ({type(e).__name__}); redoing the finetune "
              "stage")
        return None
    return model.eval()


def _meets_target(env: Any, search: Mapping[str, Any]) -> bool:
    """Whether a search record's allocation and counts agree and prune exactly the target's count."""
    from prune_env.pruning.allocation import target_count

    try:
        counts = env.counts_for({str(k): float(v) for k, v in search["allocation"].items()})
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return [int(c) for c in counts] == search.get("counts") and \
        int(counts.sum()) == target_count(env.target_sparsity, env.numels)


def _check_exportable(model: nn.Module, granularity: str) -> bool:
    """Whether the export must be weights-only (the model's attributes cannot be described, e.g. a library's
    hyper-parameter object): then the file is loaded into the user's own model with ``load(path, model=...)``.

    :raises CompressError: before the first stage, when neither form can be written (naming why), or when
        hidden units would change the shapes a weights-only file is loaded into.
    """
    from prune_env.compression.export import can_export

    ok, why = can_export(model)
    if ok:
        return False
    if granularity == "unstructured" and can_export(model, weights_only=True)[0]:
        _warn(f"{why}; the result is exported weights-only: load it with prune_env.load(path, model=YourModel(...))")
        return True
    raise CompressError(f"the model cannot be exported, so compress would fail at its third stage: {why}")


def _warn(message: str) -> None:
    print(f"prune-rnn: warning: {message}", file=sys.stderr, flush=True)


#: Settings added after the first release, with their defaults: recorded in ``compress.json`` only when not the
#: default, so that directories from before them still resume.
_LATER_DEFAULTS = {"lr_schedule": "constant", "select": "score", "criterion": None, "regularizer": None,
                   "regularizer_strength": 0.1, "regularizer_scope": "all", **OPERATOR_DEFAULTS}


# --------------------------------------------------------------------------------------------------- command
def add_parser(sub: Any) -> None:
    """Register ``compress`` on the ``prune-rnn`` subparsers."""
    from agents.cli.common import add_max_evals_arg, add_task_args

    c = sub.add_parser("compress", help="search, prune gradually while fine-tuning, quantize, export, report")
    add_task_args(c)
    c.add_argument("--sparsity", type=float, required=True, help="target overall sparsity of the prunable weights")
    c.add_argument("--agent", default=None, help="allocation agent (default: lamp; uniform for --granularity "
                   "hidden_unit)")
    add_max_evals_arg(c, None, "the agent's evaluations (default 1 for one-shot rules, else 100)")
    c.add_argument("--steps", type=int, default=800, help="fine-tuning steps; the pruning ramp takes the first half "
                   "(800: pydoc-char in about 13 min on a 2-core CPU)")
    c.add_argument("--bits", type=int, default=None, help="bits per weight value (quantization-aware fine-tuning, "
                   "then export at this width); default float32")
    c.add_argument("--granularity", default="unstructured", choices=("unstructured", "hidden_unit"))
    c.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the fine-tuning")
    c.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                   help="constant, or cosine decay to 0 after the pruning ramp")
    c.add_argument("--operator", default="magnitude", choices=OPERATORS, help="which weights of a layer the search's "
                   "env prunes (wanda, obs: from the task's calibration inputs)")
    c.add_argument("--reconstruct", default="none", choices=("none", "obs"), help="obs: re-fit each pruned layer's "
                   "kept weights by least squares on the calibration inputs (search scores and one-shot model)")
    c.add_argument("--sequential-refit", action="store_true", help="with --reconstruct obs: re-fit the one-shot "
                   "model layer after layer on the inputs of the model pruned so far")
    c.add_argument("--finetune-from", default="dense", choices=FINETUNE_FROM, help="dense: prune gradually from the "
                   "dense model while fine-tuning; oneshot: fine-tune the one-shot model with its masks fixed")
    c.add_argument("--criterion", default=None, choices=("magnitude", "movement"), help="--finetune-from dense, "
                   "unstructured: the ramp ranks weights by current magnitude or by movement (-sum w*dL/dw over the "
                   "fine-tuning steps)")
    c.add_argument("--regularizer", default=None, choices=("l1", "group_lasso"), help="penalty with proximal steps "
                   "during the ramp: l1 (unstructured) or group_lasso (hidden_unit: ISS groups)")
    c.add_argument("--regularizer-strength", type=float, default=0.1, help="penalty strength (relative to --lr)")
    c.add_argument("--regularizer-scope", default="all", choices=("all", "candidates"), help="penalise every weight "
                   "or unit (all), or at each step only the final count of lowest ones (candidates)")
    c.add_argument("--select", default="score", choices=("score", "nll"), help="fine-tuning checkpoint to keep: best "
                   "validation score, or lowest validation NLL (language models judged by perplexity)")
    c.add_argument("--method", default="linear", choices=("linear", "kmeans"), help="quantization method")
    c.add_argument("--seed", type=int, default=0, help="seeds the agent and the fine-tuning batches")
    c.add_argument("--device", default="cpu", help="where to search and fine-tune")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="agent option, e.g. learning_rate=0.1 (repeatable)")
    c.add_argument("--out", required=True, help="run directory (rerunning with it resumes after the last finished "
                   "stage)")
    c.add_argument("--no-progress", action="store_true", help="hide progress bars")
    c.set_defaults(func=cmd_compress)


def cmd_compress(args: Any) -> int:
    """search -> gradual pruning with fine-tuning (quantization-aware with --bits) -> export -> report."""
    from agents.cli.common import (
        CLIError,
        check_agents,
        check_device,
        check_seed,
        check_sparsity,
        parse_options,
        resolve_cli_task,
    )

    target = check_sparsity(args.sparsity)
    check_device(args.device)
    seed = check_seed(args.seed)
    if args.agent is not None:
        check_agents([args.agent])
    options = parse_options([f"agent.{o}" for o in args.option], ["agent"]).get("agent", {})
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out: {args.out} is a file, not a directory")
    task = resolve_cli_task(args.task, args.task_seed, not args.no_progress)
    report = compress(task, target, args.out, agent=args.agent, max_evals=args.max_evals, seed=seed,
                      steps=args.steps, bits=args.bits, granularity=args.granularity, lr=args.lr,
                      lr_schedule=args.lr_schedule, select=args.select, method=args.method, device=args.device,
                      criterion=args.criterion, regularizer=args.regularizer,
                      regularizer_strength=args.regularizer_strength, regularizer_scope=args.regularizer_scope,
                      operator=args.operator,
                      reconstruct=args.reconstruct, finetune_from=args.finetune_from,
                      sequential=args.sequential_refit, agent_options=options, progress=not args.no_progress,
                      log=lambda msg: print(msg, flush=True), command=["prune-rnn", *args.argv])
    final, dense = report["rows"]["final"], report["rows"]["dense"]
    print(f"test score {final.get('test_score', float('nan')):.4f} (dense {dense.get('test_score', float('nan')):.4f}),"
          f" {final['bytes']} bytes ({final['bytes_ratio']:.3f}x dense); report: {out / 'report.md'}")
    return 0
