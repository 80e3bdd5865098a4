"""The Glimpse environments: the single ``GlimpseEnv``, its native vector form, and the
multi-scale ``MultiScaleEnv``."""

from glimpse_gym.envs.checks import OBSERVATION_MODES
from glimpse_gym.envs.glimpse_env import GlimpseEnv
from glimpse_gym.envs.multiscale_env import MultiScaleEnv
from glimpse_gym.envs.multiscale_vector import MultiScaleVectorEnv, make_multiscale_vector_env
from glimpse_gym.envs.source import GlimpseSource, load_source
from glimpse_gym.envs.vector import GlimpseVectorEnv, make_vector_env
from glimpse_gym.rules import check_action

__all__ = [
    "OBSERVATION_MODES",
    "GlimpseEnv",
    "GlimpseSource",
    "GlimpseVectorEnv",
    "MultiScaleEnv",
    "MultiScaleVectorEnv",
    "check_action",
    "load_source",
    "make_multiscale_vector_env",
    "make_vector_env",
]
