"""Multi-turn text environments for agent RL (GiGPO): the interface, a grid world, adapters."""

from jaxlayer.envs.base import Env, StepResult
from jaxlayer.envs.episode import Episode, SafeEpisode, Turn, run_episode, summarize
from jaxlayer.envs.external import GymTextEnv, alfworld_env
from jaxlayer.envs.gridworld import GridWorld
from jaxlayer.envs.registry import ENVS, get_env

__all__ = [
    "ENVS", "Env", "Episode", "GridWorld", "GymTextEnv", "SafeEpisode", "StepResult", "Turn",
    "alfworld_env", "get_env", "run_episode", "summarize",
]
