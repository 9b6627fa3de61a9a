"""Compressed model files (:func:`export`, :func:`load`) and ``torch.nn.utils.prune``-compatible masks."""

from prune_env.compression.export.encoding import *  # noqa: F401,F403
