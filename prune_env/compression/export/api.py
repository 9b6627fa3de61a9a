"""The entry points: :func:`export`, :func:`load` and :func:`can_export`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prune_env.compression.export.legacy as legacy
from prune_env.compression.export.classes import class_name, user_classes
from prune_env.compression.export.format import LEGACY_MAGIC, ExportError, pack, unpack
from prune_env.compression.export.modules import describe, rebuild
from prune_env.compression.export.table import Tensors, fill, load_table, store
from prune_env.compression.size import resolve_bits
from prune_env.io import atomic_write
from prune_env.pruning.layers import find_prunable_layers, rnn_modules

KINDS = ("model", "weights")


def export(model: nn.Module, path: str | os.PathLike, bits: int | dict[str, int] | None = None,
           method: str = "linear", *, weights_only: bool = False) -> int:
    """Write ``model`` compressed to ``path`` atomically; returns the file size in bytes.

    Zeros in the prunable weights are the pruned weights. With ``bits`` the values are quantized first; a model the
    env already quantized with the same settings is stored unchanged (quantization is idempotent).

    The file is ``safetensors`` plus a JSON description (see :mod:`prune_env.compression.export`). By default it
    describes the module tree too, so :func:`load` rebuilds the model on its own: submodules, parameters, buffers,
    tensor attributes and plain attributes (``None``, numbers, strings, tuples, lists, dicts, sets, slices, dtypes,
    devices, and the pure tensor functions of :func:`prune_env.compression.export.ops.functions`); a
    ``torch.fx.GraphModule`` may use only the closed operation set of :mod:`prune_env.compression.export.graph`.
    Hooks are not stored. Check first with :func:`can_export`.

    With ``weights_only=True`` only the tensors are stored (the state dict, compressed the same way), for models
    whose attributes no description can hold (a Lightning module's ``_hparams``, a flair ``Dictionary``...): load
    them into a model you build, ``load(path, model=MyModel(...))``.

    :param model: the (pruned) model; it is not modified.
    :param path: the output file.
    :param bits: bits per value of every prunable weight (2..16, or 32 for float32), or a dict weight name -> bits
        (missing: 32); ``None``: float32.
    :param method: ``"linear"`` (per-output-channel symmetric) or ``"kmeans"`` (shared codebook per layer).
    :param weights_only: store the tensors without the module tree.
    :raises ValueError: for bad arguments, or a model holding something a description cannot (the message names it
        and suggests ``weights_only=True``).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(weights_only, bool):
        raise ValueError(f"`weights_only` must be a bool, got {weights_only!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` must be a file path, got the directory {str(path)!r}")
    per_layer = resolve_bits(bits, [layer.name for layer in find_prunable_layers(model)])
    if weights_only:
        module, extras = None, []
    else:
        try:
            module, extras = describe(model)
        except ValueError as exc:
            raise ValueError(f"{exc}. export(..., weights_only=True) stores the tensors only; load that file with "
                             "load(path, model=<a model you build>)") from None
    entries, stored = store(model, per_layer, method, extras)
    description: dict[str, Any] = {"kind": "weights" if weights_only else "model", "class": class_name(type(model)),
                                   "torch": torch.__version__, "tensors": entries}
    if module is not None:
        description["module"] = module
    data = pack(stored, description)
    atomic_write(path, data)
    return len(data)


def can_export(model: nn.Module, weights_only: bool = False) -> tuple[bool, str]:
    """Whether :func:`export` can write ``model`` (and :func:`load` rebuild it), without writing anything.

    :param model: the model.
    :param weights_only: check the weights-only format instead (it stores any state dict).
    :returns: ``(True, "")``, or ``(False, reason)`` with the attribute or operation that no description can hold
        named, and the way out (``weights_only=True``).
    """
    if not isinstance(model, nn.Module):
        return False, f"`model` must be a torch.nn.Module, got {type(model).__name__}"
    if weights_only:
        return True, ""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hooks are reported by export itself
            describe(model)
    except ValueError as exc:
        return False, (f"{exc}. export(..., weights_only=True) stores the tensors only; load that file with "
                       "load(path, model=<a model you build>)")
    return True, ""


def load(path: str | os.PathLike, device: str | torch.device = "cpu", *,
         classes: Iterable[type] | Mapping[str, type] | None = None, model: nn.Module | None = None,
         trust_pickle: bool = False) -> nn.Module:
    """Rebuild the model :func:`export` wrote, in eval mode. Nothing from the file is executed.

    **What runs.** ``json.loads`` on the header and the ``safetensors`` parser on the tensors; numpy and torch to
    decode the compressed streams; then, for each described submodule, ``object.__new__(cls)`` and
    ``nn.Module.__init__`` of a class on the allowlist (every ``torch.nn.modules`` class, the built-in tasks'
    models of :mod:`prune_env.tasks.models`, and the classes in ``classes``), whose ``__dict__`` is filled with the
    file's plain values and tensors; no ``__init__``, ``__setstate__`` or other method of the class runs. For a
    stored graph, ``torch.fx`` generates ``forward`` from nodes that may only use the closed operation set of
    :mod:`prune_env.compression.export.graph`. Nothing is unpickled, no module is imported, and no function or class
    the file names is looked up anywhere but in those fixed tables. The classes' own code (``forward``) runs only
    when you call the model. The one exception is explicit: ``trust_pickle=True`` on a version-1 file.

    A model of your own class: ``load(path, classes=[MyModel])`` (the error names every class still needed), or
    ``load(path, model=MyModel(...))`` to fill the tensors into a model you built (the only way to read a
    weights-only file).

    :param path: the file.
    :param device: where to put the model.
    :param classes: further ``nn.Module`` classes to rebuild, matched by ``module.qualname`` (or by ``qualname``
        alone, e.g. for a class that was in ``__main__`` at export); a dict maps the name the file records to a class.
    :param model: fill the stored state dict into this model instead (its state dict must match; non-persistent
        buffers and tensor attributes keep the model's own values); it is changed in place, moved to ``device`` and
        returned. The file's module description is not used, so this also reads the tensors of version-1 and
        version-2 files.
    :param trust_pickle: read a version-1 file's pickled module (**runs arbitrary code from the file**, like
        ``torch.load(weights_only=False)``): only for a file you trust; re-export it to get a current file.
    :raises ExportError: (a ``ValueError``) for a foreign, truncated, corrupt or other-version file, a version-2 file
        or a version-1 file without ``trust_pickle`` (unless ``model`` is given), a weights-only file without
        ``model``, classes off the allowlist (all named), an operation outside the closed set, or tensors that do
        not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a file")
    user = user_classes(classes)
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if model is not None and classes is not None:
        raise ValueError("pass `classes` (to rebuild the model) or `model` (to fill one you built), not both")
    data = path.read_bytes()
    try:
        out = _legacy(data, model, trust_pickle) if data[:8] == LEGACY_MAGIC else _current(data, model, user)
        for m in rnn_modules(out):  # a crafted RNN configuration (say, no weight names) fails here: refused below
            m.flatten_parameters()
    except ExportError as exc:
        raise ExportError(f"{path}: {exc}") from None
    except (RecursionError, MemoryError) as exc:
        raise ExportError(f"{path}: refused prune-rnn-gym export ({type(exc).__name__})") from None
    except Exception as exc:  # a malformed file that slipped past the checks: still one typed error
        raise ExportError(f"{path}: corrupt prune-rnn-gym export ({type(exc).__name__}: {exc})") from None
    out = out.to(device).eval()
    for m in rnn_modules(out):
        m.flatten_parameters()
    return out


def _current(data: bytes, model: nn.Module | None, user: dict[str, type]) -> nn.Module:
    description, stored = unpack(data)
    kind = description.get("kind")
    if kind not in KINDS:
        raise ExportError(f"corrupt prune-rnn-gym export (kind {kind!r})")
    tensors, roles = load_table(description.get("tensors"), stored)
    if model is not None:
        return fill(model, tensors, roles)
    if kind == "weights":
        name = description.get("class")
        short_name = name.rsplit(".", 1)[-1] if isinstance(name, str) and name.rsplit(".", 1)[-1].isidentifier() \
            else "MyModel"
        raise ExportError(f"a weights-only export (of a {name!r}): it holds no module tree; build the model and "
                          f"pass it: load(path, model={short_name}(...))")
    table = Tensors(tensors, roles)
    out = rebuild(description.get("module"), table, user)
    if table.unused():
        raise ExportError(f"tensors {table.unused()[:5]} belong to no module of the description")
    return out


def _legacy(data: bytes, model: nn.Module | None, trust_pickle: bool) -> nn.Module:
    version, header, body = legacy.read(data)
    if model is None and version == 2:
        raise ExportError(legacy.REFUSED_V2)
    if model is None and not trust_pickle:
        raise ExportError(legacy.REFUSED_V1)
    tensors, roles = legacy.tensors(header, body)
    if model is not None:
        return fill(model, tensors, roles)
    return legacy.unpickle_v1(header, body, tensors)
