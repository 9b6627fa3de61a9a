"""prune-rnn-gym: a Gymnasium environment for learning per-layer pruning of recurrent networks."""

from prune_env.compression.export import export, load
from prune_env.envs.env import PruneRNNEnv
from prune_env.envs.registration import register_envs
from prune_env.envs.vector import PruneRNNVectorEnv
from prune_env.envs.zoo import PruneRNNZooEnv
from prune_env.pruning.layers import PrunableLayer, find_prunable_layers
from prune_env.task import EvaluationError, RNNTask, TaskError
from prune_env.version import __version__

__all__ = ["PruneRNNEnv", "RNNTask", "PrunableLayer", "find_prunable_layers", "register_envs", "PruneRNNVectorEnv",
           "PruneRNNZooEnv", "EvaluationError", "TaskError", "export", "load", "__version__"]

register_envs()
