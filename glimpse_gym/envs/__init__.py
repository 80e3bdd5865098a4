"""The Glimpse environments: the single ``GlimpseEnv`` and its native vector form."""

from glimpse_gym.envs.checks import check_action
from glimpse_gym.envs.glimpse_env import OBSERVATION_MODES, GlimpseEnv
from glimpse_gym.envs.source import GlimpseSource, load_source
from glimpse_gym.envs.vector import GlimpseVectorEnv, make_vector_env

__all__ = [
    "OBSERVATION_MODES",
    "GlimpseEnv",
    "GlimpseSource",
    "GlimpseVectorEnv",
    "check_action",
    "load_source",
    "make_vector_env",
]
