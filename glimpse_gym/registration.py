"""Environment ids, registered with Gymnasium when ``glimpse_gym`` is imported.

A variant is an id with other default arguments (any argument can still be passed to
``gym.make`` / ``gym.make_vec``); every id has the single env and the native vector env.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from glimpse_gym.tasks import shipped_tasks

ENV_IDS: dict[str, dict] = {
    # the whole feature grid is observed; the agent chooses where to read out
    "Glimpse-v0": {},
    # only the glimpsed cells' features are observed (zeros elsewhere), as in RAM
    "Glimpse-Partial-v0": {"observation": "partial"},
    # the standard tasks through their shipped BagNets (glimpse_gym.tasks); they take root=
    **{task.env_id: task.env_kwargs() for task in shipped_tasks()},
}


MULTISCALE_IDS: dict[str, dict] = {
    "MultiScale-v0": {},  # needs bank=, a multi-scale bank
    # the standard tasks across scales, through their shipped BagNets; they take root=
    **{task.multiscale_id: {"task": task.name, "glimpses": task.glimpses}
       for task in shipped_tasks() if task.multiscale_shipped},
}


def register_envs() -> None:
    """Register every id (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id in registry:
            continue
        # order_enforce=False: the env raises its own ResetNeeded on a step before reset
        # (Gymnasium's OrderEnforcing would raise gymnasium's first). disable_env_checker:
        # Gymnasium's passive checker, after a reset that raised (bad options), fails the
        # next step with a TypeError of its own; the full checker (check_env) runs in the
        # tests instead, and gym.make(..., disable_env_checker=False) still adds it.
        register(id=env_id, entry_point="glimpse_gym.envs:GlimpseEnv",
                 vector_entry_point="glimpse_gym.envs:make_vector_env", kwargs=dict(kwargs),
                 order_enforce=False, disable_env_checker=True)
    for env_id, kwargs in MULTISCALE_IDS.items():  # glimpses across scales
        if env_id not in registry:
            register(id=env_id, entry_point="glimpse_gym.envs:MultiScaleEnv",
                     vector_entry_point="glimpse_gym.envs:make_multiscale_vector_env",
                     kwargs=dict(kwargs), order_enforce=False, disable_env_checker=True)
