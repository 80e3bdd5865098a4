"""Environment ids, registered with Gymnasium when ``glimpse_gym`` is imported."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_IDS = {
    "Glimpse-v0": {},
}


def register_envs() -> None:
    """Register every id (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id in registry:
            continue
        # order_enforce=False: the env raises its own ResetNeeded on a step before reset
        # (Gymnasium's OrderEnforcing would raise gymnasium's first)
        register(id=env_id, entry_point="glimpse_gym.envs:GlimpseEnv",
                 vector_entry_point="glimpse_gym.envs:make_vector_env", kwargs=dict(kwargs),
                 order_enforce=False)
