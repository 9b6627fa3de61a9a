"""Compressed model files: :func:`export`, :func:`load`, :func:`can_export`; ``torch.nn.utils.prune``-compatible
:func:`masks` and :func:`apply_masks`.

A file (format version 3) is a ``safetensors`` file: data only, no code, readable by any ``safetensors`` reader.
Its metadata holds a JSON description; nothing in it is ever executed:

- :mod:`~prune_env.compression.export.format`: the container, its header and checksum;
- :mod:`~prune_env.compression.export.encoding`: the sparse (dense, bitmask, relative index) and quantized
  encodings of the prunable weights, stored as ordinary ``uint8``/``float32`` tensors, byte for byte the sizes
  :func:`prune_env.compression.size.model_size` reports;
- :mod:`~prune_env.compression.export.table`: which stored tensors make up each model tensor;
- :mod:`~prune_env.compression.export.modules`: the module tree, declarative: each submodule's class and the plain
  attributes its constructor set (a hidden-unit-pruned GRU is a GRU whose ``hidden_size`` is smaller), rebuilt
  only from an allowlist of classes (:mod:`~prune_env.compression.export.classes`) without running their code;
- :mod:`~prune_env.compression.export.graph`: a ``torch.fx`` graph over those modules restricted to a closed
  operation set (:mod:`~prune_env.compression.export.ops`), for rewritten models no module tree describes;
  :mod:`~prune_env.compression.export.declarative` turns a rewritten model back into the user's class with resized
  submodules wherever that computes the same outputs;
- :mod:`~prune_env.compression.export.legacy`: version-1 (pickle) and version-2 (stored call graph) files, whose
  modules are refused and whose tensors load into a model you pass.

A model of your own class loads with ``load(path, classes=[MyModel])`` or ``load(path, model=MyModel(...))``. A
model whose attributes no description can hold exports with ``export(..., weights_only=True)`` and loads with
``load(path, model=...)``.

>>> import os, tempfile
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Embedding(12, 8), nn.Linear(8, 12))
>>> with torch.no_grad():
...     _ = model[1].weight[:, 4:].zero_()  # half of the head pruned
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "model.prnn")
...     nbytes, restored = export(model, path), load(path)
...     nbytes == os.path.getsize(path)
True
>>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
True
"""

from prune_env.compression.export.api import can_export, export, load
from prune_env.compression.export.classes import builtin_classes, class_name
from prune_env.compression.export.declarative import declarative
from prune_env.compression.export.format import VERSION, ExportError
from prune_env.compression.export.masks import apply_masks, masks
from prune_env.compression.export.ops import ATTRIBUTES, METHODS, functions

__all__ = ["ATTRIBUTES", "METHODS", "VERSION", "ExportError", "apply_masks", "builtin_classes", "can_export",
           "class_name", "declarative", "export", "functions", "load", "masks"]
