"""Language-model presets: train (or load) an LM on token splits and wrap it as a structured task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.task import BatchEvaluator, RNNTask
from prune_env.tasks.cache import load_or_train
from prune_env.tasks.config import finish_metadata
from prune_env.tasks.scoring import ChunkedScorer, contiguous_windows, spaced_windows
from prune_env.tasks.training import BatchLoss, SampledLoss, seeded, train_lm, training_threads

#: Windows per calibration batch.
CALIBRATION_BATCH = 16


def build_lm_task(*, preset: str, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                  model_cls: type[nn.Module], vocab_size: int, splits: Mapping[str, torch.Tensor],
                  extra: dict[str, Any], metadata: dict[str, Any]) -> RNNTask:
    """Train (or load) a language model on token splits and wrap it as a structured :class:`RNNTask`.

    ``cfg`` must hold ``emb, hidden, layers, steps, seq_len, batch, lr, eval_tokens, test_tokens, loss_tokens,
    metric``. The evaluation batch is ``eval_tokens // seq_len`` windows spread over the validation split; ``test``
    scores consecutive windows over the first ``test_tokens`` of the test split (all of it when ``None``);
    ``loss`` is the cross-entropy on ``loss_tokens // seq_len`` windows spread over the training split, and the
    same training windows, in batches of :data:`CALIBRATION_BATCH`, are the task's ``calibration_batches``.

    :param preset: preset name (cache file prefix and task name).
    :param cfg: resolved config.
    :param seed: model seed.
    :param retrain: ignore the cache.
    :param progress: show the training bar.
    :param model_cls: a :class:`~prune_env.tasks.models.LanguageModel` subclass.
    :param vocab_size: number of token ids.
    :param splits: ``{"train", "val", "test"}`` 1-D LongTensors.
    :param extra: data fingerprint for the cache key.
    :param metadata: preset-specific facts; training facts are added to it.
    """
    seq_len, metric = cfg["seq_len"], cfg["metric"]
    if metric not in ("accuracy", "nll"):
        raise ValueError(f"make_task({preset!r}): config `metric` must be 'accuracy' or 'nll', got {metric!r}")
    try:
        eval_x, eval_y = spaced_windows(splits["val"], max(1, cfg["eval_tokens"] // seq_len), seq_len)
        test_x, test_y = contiguous_windows(splits["test"], seq_len, cfg["test_tokens"])
        loss_x, loss_y = spaced_windows(splits["train"], max(1, cfg["loss_tokens"] // seq_len), seq_len)
    except ValueError as e:
        raise ValueError(f"make_task({preset!r}): {e}; lower config `seq_len` or use more data") from None
    evaluate = BatchEvaluator((eval_x, eval_y), metric)
    test = ChunkedScorer(test_x, test_y, metric)

    def build() -> nn.Module:
        with seeded(seed):
            return model_cls(vocab_size, cfg["emb"], cfg["hidden"], cfg["layers"])

    def train() -> tuple[nn.Module, dict[str, Any]]:
        with seeded(seed):
            model = model_cls(vocab_size, cfg["emb"], cfg["hidden"], cfg["layers"])
            with training_threads(model):
                seconds = train_lm(model, splits["train"], steps=cfg["steps"], seq_len=seq_len,
                                   batch=cfg["batch"], lr=cfg["lr"], seed=seed, progress=progress,
                                   desc=f"training {preset}")
                scores = {"dense_val": evaluate(model), "dense_test": test(model)}
        return model, {"train_time_s": round(seconds, 2), "torch": str(torch.__version__), **scores}

    model, info, hit = load_or_train(preset, cfg, seed, build=build, train=train, retrain=retrain, extra=extra)
    model.eval()
    metadata.update({"preset": preset, "config": dict(cfg), "seed": seed, "model": type(model).__name__,
                     "vocab_size": vocab_size,
                     "splits": {k: int(v.numel()) for k, v in splits.items()},
                     "eval_tokens": int(eval_y.numel()), "test_tokens": int(test_y.numel()),
                     "loss_tokens": int(loss_y.numel())})
    finish_metadata(metadata, info, hit)
    return RNNTask(model=model, test=test, loss=BatchLoss(loss_x, loss_y), name=preset,
                   eval_batch=(eval_x, eval_y), metric=metric, metadata=metadata,
                   train_loss=SampledLoss(splits["train"], cfg["batch"], seq_len),
                   calibration_batches=tuple(loss_x.split(CALIBRATION_BATCH)))
