"""Glimpse Gym: hard-attention image classification as a reinforcement-learning problem.

An agent classifies an image by looking at a few cells of a BagNet feature grid. This
package holds the datasets, the BagNet representation networks, feature banks, the rules
(:mod:`glimpse_gym.rules`) and the ``Glimpse-v0`` / ``Glimpse-Partial-v0`` environments;
``agents`` and ``train`` build on it, never the reverse.
"""

__version__ = "0.1.0"

from glimpse_gym.registration import ENV_IDS, register_envs

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
