"""Model classes of the built-in tasks.

They live at module level so that models (and the tasks holding them) pickle and deep-copy, and their forwards are
plain ``Embedding/LSTM -> Linear`` chains with no control flow so that ``torch.fx`` can trace them (hidden units are
later removed by rewriting the traced graph). Attribute names are stable: ``embed`` (language models only), ``rnn``
and ``head``, so the prunable layers are ``embed.weight``, ``rnn.weight_ih_l<k>``, ``rnn.weight_hh_l<k>`` and
``head.weight``.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceClassifier(nn.Module):
    """LSTM over a sequence of feature vectors, then a linear head on the last time step.

    :param input_size: features per time step.
    :param hidden: LSTM hidden units per layer.
    :param num_layers: stacked LSTM layers.
    :param num_classes: output classes.

    ``forward(x: FloatTensor[B, T, input_size]) -> logits[B, num_classes]``.
    """

    def __init__(self, input_size: int, hidden: int, num_layers: int, num_classes: int):
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden, num_layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class LanguageModel(nn.Module):
    """Token-level LSTM language model: ``Embedding -> LSTM -> Linear`` over every time step.

    :param vocab_size: number of token ids (input and output).
    :param emb: embedding size.
    :param hidden: LSTM hidden units per layer.
    :param num_layers: stacked LSTM layers.

    ``forward(x: LongTensor[B, T]) -> logits[B, T, vocab_size]``; position ``t`` predicts token ``t + 1``. Every
    sequence starts from a zero hidden state (no state is carried between calls).
    """

    def __init__(self, vocab_size: int, emb: int, hidden: int, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb)
        self.rnn = nn.LSTM(emb, hidden, num_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(x))
        return self.head(out)


class CharLM(LanguageModel):
    """Character-level :class:`LanguageModel` (separate class so reports and exports can tell the two apart)."""


class WordLM(LanguageModel):
    """Word-level :class:`LanguageModel`."""


# --- model zoo (prune_env.tasks.zoo) ----------------------------------------------------------------------------

#: Recurrent cell name -> module class, for the zoo's models.
CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class ZooLM(nn.Module):
    """Token language model of the zoo: ``Embedding`` (or one-hot tokens) -> LSTM/GRU/RNN -> per-step head.

    :param vocab_size: number of token ids (input and output).
    :param emb: embedding size; ``0`` feeds one-hot tokens straight into the recurrent layer (no ``embed``).
    :param hidden: hidden units per layer.
    :param num_layers: stacked recurrent layers.
    :param cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh).
    :param head: ``"lm"`` (one ``Linear`` per step) or ``"lm-mlp"`` (``Linear -> tanh -> Linear`` per step).
    :param in_proj: width of a ``Linear -> tanh`` input projection between the embedding and the recurrent layer
        (``0``: none).
    :param proj_size: LSTM only: the recurrent layer's output projection (``nn.LSTM(proj_size=...)``; ``0``: none).
    :param tied: the head shares the embedding's weight (Press & Wolf 2017); needs ``emb`` equal to the width the
        head reads (``proj_size`` or ``hidden``).

    ``forward(x: LongTensor[B, T]) -> logits[B, T, vocab_size]``; position ``t`` predicts token ``t + 1``, from a
    zero state. Modules: ``embed`` (when ``emb > 0``), ``in_proj`` (when set), ``rnn``, ``mlp`` (``lm-mlp`` only),
    ``head``. With every option at its default the modules, and the random draws that initialise them, are those
    of the original zoo, so its models stay bit for bit the same.
    """

    def __init__(self, vocab_size: int, emb: int, hidden: int, num_layers: int, *, cell: str = "lstm",
                 head: str = "lm", in_proj: int = 0, proj_size: int = 0, tied: bool = False):
        super().__init__()
        if head not in ("lm", "lm-mlp"):
            raise ValueError(f"ZooLM: `head` must be 'lm' or 'lm-mlp', got {head!r}")
        if proj_size and cell != "lstm":
            raise ValueError(f"ZooLM: `proj_size` needs cell='lstm', got cell={cell!r}")
        width = proj_size or hidden
        if tied and emb != width:
            raise ValueError(f"ZooLM: `tied` needs emb ({emb}) equal to the head's input width ({width})")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, emb) if emb else None
        # One-hot codes as a non-persistent buffer: an equality test, so the forward has no data-dependent checks.
        self.register_buffer("codes", torch.arange(vocab_size), persistent=False)
        self.in_proj = nn.Linear(emb or vocab_size, in_proj) if in_proj else None
        extra = {"proj_size": proj_size} if proj_size else {}
        self.rnn = CELLS[cell](in_proj or emb or vocab_size, hidden, num_layers, batch_first=True, **extra)
        self.mlp = nn.Linear(width, width) if head == "lm-mlp" else None
        self.head = nn.Linear(width, vocab_size)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            h = self.embed(x)
        else:
            h = (x.unsqueeze(-1) == self.codes).float()
        if self.in_proj is not None:
            h = torch.tanh(self.in_proj(h))
        out, _ = self.rnn(h)
        if self.mlp is not None:
            out = torch.tanh(self.mlp(out))
        return self.head(out)


class ZooSequenceNet(nn.Module):
    """Sequence classifier or regressor of the zoo: inputs -> LSTM/GRU/RNN (uni- or bidirectional) -> pooled head.

    :param in_features: float features per step, or the embedding size when ``vocab_size`` is given.
    :param hidden: hidden units per layer and direction.
    :param num_layers: stacked recurrent layers.
    :param out_features: classes (logits) or 1 (a regression output).
    :param cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh).
    :param bidirectional: a bidirectional recurrent module.
    :param vocab_size: token inputs through ``nn.Embedding(vocab_size, in_features)``; ``None`` for float inputs.
    :param head: ``"last"`` (``Linear`` on the last step), ``"mean"`` (``Linear`` on the mean over time),
        ``"mlp"`` (``Linear -> tanh -> Linear`` on the last step, ``mlp_hidden`` units), ``"step"`` (``Linear`` on
        every step: one output per time step) or ``"attn"`` (attention pooling: a ``Linear`` scores each step, a
        softmax over time weights the outputs, then ``Linear``; Bahdanau-style pooling as in Lin et al. 2017).
    :param mlp_hidden: width of the ``mlp`` head's hidden layer.
    :param in_proj: width of a ``Linear -> tanh`` input projection before the recurrent layer (``0``: none).
    :param proj_size: LSTM only: ``nn.LSTM(proj_size=...)`` (``0``: none).

    ``forward(x: FloatTensor[B, T, in_features] | LongTensor[B, T]) -> [B, out_features]`` (``[B, T,
    out_features]`` for the ``step`` head). Modules: ``embed`` (token inputs), ``in_proj`` (when set), ``rnn``,
    ``attn`` (``attn`` head), ``mlp`` (``mlp`` head), ``head``. With every option at its default the modules and
    their initialisation are those of the original zoo.
    """

    def __init__(self, in_features: int, hidden: int, num_layers: int, out_features: int, *, cell: str = "lstm",
                 bidirectional: bool = False, vocab_size: int | None = None, head: str = "last",
                 mlp_hidden: int = 64, in_proj: int = 0, proj_size: int = 0):
        super().__init__()
        if head not in ("last", "mean", "mlp", "step", "attn"):
            raise ValueError(f"ZooSequenceNet: `head` must be 'last', 'mean', 'mlp', 'step' or 'attn', got {head!r}")
        if proj_size and cell != "lstm":
            raise ValueError(f"ZooSequenceNet: `proj_size` needs cell='lstm', got cell={cell!r}")
        self.pool = head
        self.embed = nn.Embedding(vocab_size, in_features) if vocab_size else None
        self.in_proj = nn.Linear(in_features, in_proj) if in_proj else None
        extra = {"proj_size": proj_size} if proj_size else {}
        self.rnn = CELLS[cell](in_proj or in_features, hidden, num_layers, batch_first=True,
                               bidirectional=bidirectional, **extra)
        width = (proj_size or hidden) * (2 if bidirectional else 1)
        self.attn = nn.Linear(width, 1) if head == "attn" else None
        self.mlp = nn.Linear(width, mlp_hidden) if head == "mlp" else None
        self.head = nn.Linear(mlp_hidden if head == "mlp" else width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        if self.in_proj is not None:
            x = torch.tanh(self.in_proj(x))
        out, _ = self.rnn(x)
        if self.pool == "step":
            h = out
        elif self.pool == "mean":
            h = out.mean(1)
        elif self.pool == "attn":
            h = (torch.softmax(self.attn(out), dim=1) * out).sum(1)
        else:
            h = out[:, -1]
        if self.mlp is not None:
            h = torch.tanh(self.mlp(h))
        return self.head(h)
