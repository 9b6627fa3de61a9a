"""prune-rnn-gym: a Gymnasium environment for learning per-layer pruning of recurrent networks."""

from .env import PruneRNNEnv
from .export import export, load
from .layers import PrunableLayer, find_prunable_layers
from .registration import register_envs
from .task import EvaluationError, RNNTask, TaskError
from .vector_env import PruneRNNVectorEnv
from .zoo_env import PruneRNNZooEnv

__all__ = ["PruneRNNEnv", "RNNTask", "PrunableLayer", "find_prunable_layers", "register_envs", "PruneRNNVectorEnv",
           "PruneRNNZooEnv", "EvaluationError", "TaskError", "export", "load"]
__version__ = "0.1.0"

register_envs()
