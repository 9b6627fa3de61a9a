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
