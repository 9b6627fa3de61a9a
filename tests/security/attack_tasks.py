"""Helpers of the command-line attack tests: a tiny task a user names as ``attack_tasks:tiny`` (this directory is on
``sys.path`` under pytest), the marker file that must never appear, and payloads that would create it."""

from __future__ import annotations

import json
import pickle
from functools import partial
from pathlib import Path

import torch
from torch import nn

from prune_env import RNNTask

VOCAB = 10
#: The spec a user types for the tiny task.
SPEC = "attack_tasks:tiny"


class Lm(nn.Module):
    """Embedding -> GRU -> Linear."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnn = nn.GRU(6, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(x))[0])


def tiny(seed: int = 0) -> RNNTask:
    """A random tiny LM task (seconds), with test scores and a loss."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Lm().eval()
    x = torch.randint(0, VOCAB, (16, 8), generator=g)
    xt = torch.randint(0, VOCAB, (16, 8), generator=g)
    return RNNTask(model, eval_batch=(x, (x + 1) % VOCAB), metric="accuracy", name="attack-tiny",
                   test=partial(_accuracy, x=xt, y=(xt + 1) % VOCAB), loss=partial(_nll, x=x, y=(x + 1) % VOCAB))


def _nll(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(m(x).reshape(-1, VOCAB), y.reshape(-1))


@torch.no_grad()
def _accuracy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (m(x).argmax(-1) == y).float().mean().item()


class Payload:
    """Unpickling this creates ``path``: the stand-in for arbitrary code run by a loader."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickled_payload(path: Path) -> bytes:
    """A pickle that creates the marker at ``path`` when loaded (proven live by :func:`prove_live`)."""
    return pickle.dumps({"state_dict": Payload(path)})


def torch_payload(dest: Path, marker: Path) -> None:
    """``dest``: a ``torch.save`` file whose unpickling creates ``marker``."""
    torch.save({"state_dict": Payload(marker)}, dest)


def evil_module(folder: Path, name: str, marker: Path) -> str:
    """A ``name.py`` in ``folder`` whose import creates ``marker``; returns its ``module:function`` spec."""
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef make():\n    raise SystemExit(1)\n")
    return f"{name}:make"


def prove_live(marker: Path, load) -> None:
    """Run ``load`` (a loader without the checks) and assert that the marker appears: the payload works, so a test
    that it does not appear under the real loader can fail."""
    assert not marker.exists()
    load()
    assert marker.exists(), "the payload is not live"
    marker.unlink()


def edit_json(path: Path, fn) -> None:
    """Apply ``fn`` to the JSON in ``path`` and write it back (not atomically: an attacker's edit)."""
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
