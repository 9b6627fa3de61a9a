"""The PTB word LM of the ``corpus`` preset (2x200 LSTM, word level), trained for longer than the preset's default.

The preset's default of 1000 training steps (a few minutes on 2 CPU cores) leaves the model far from converged: the
dense model trained 2000 steps more reaches test perplexity 155 from 371 (``benchmarks/results/
finetuned_ptb_control/``), so "within 10% of dense" measured against it says little. Compression figures that a
practitioner can compare need a dense model closer to convergence; this is that model, through the CLI's
``module:function`` task form::

    PRUNE_RNN_PTB=../shared/data/ptb prune-rnn compress --task benchmarks.ptb_task:make --sparsity 0.9 ...

The data directory is ``$PRUNE_RNN_PTB`` (default ``../shared/data/ptb`` next to the checkout). The model is the
preset's, trained once with ``steps=STEPS`` and cached like the presets' models.
"""

from __future__ import annotations

import os
from pathlib import Path

from prune_env import RNNTask

#: Training steps of the dense model (the preset's default is 1000).
STEPS = 6000


def make() -> RNNTask:
    from prune_env.tasks import make_task

    path = os.environ.get("PRUNE_RNN_PTB") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb")
    return make_task("corpus", path=path, steps=STEPS, progress=False)
