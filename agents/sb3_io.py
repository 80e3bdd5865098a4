"""Stable-Baselines3 ``.zip`` files that can be shared: saved with a manifest, loaded without
unpickling anything.

SB3's own ``PPO.load`` unpickles entries of the zip (the policy class, the spaces, the
schedules, stored with cloudpickle), so loading a zip from somebody else with it runs
whatever code the file holds. :func:`save_sb3` writes SB3's usual zip (still loadable with
``PPO.load`` by those who trust it) plus ``glimpse-gym.json``: the algorithm, the policy's
extractor and sizes, the bank it was trained on, and the sha256 of every other member.
:func:`read_sb3` reads only that manifest (JSON), SB3's ``data`` (JSON; its pickled entries
are never decoded) and the ``.pth`` state dicts (``torch.load(weights_only=True)``), and
checks every checksum; :func:`load_sb3_policy` and :func:`load_sb3_model` rebuild the
policy or the whole algorithm from the project's own classes and load the weights into it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.extractors import extractor_policy_kwargs
from glimpse_gym.errors import CheckpointError
from glimpse_gym.fileio import READ_ERRORS, atomic_write, describe_file, json_checksum

MANIFEST = "glimpse-gym.json"
FORMAT = "glimpse-gym-sb3/1"
ALGORITHMS = ("PPO", "MaskablePPO")
TRUST_HINT = ("glimpse-gym rebuilds SB3 models from its own classes and does not unpickle "
              "what a zip stores; if you trust this file, stable_baselines3's PPO.load reads "
              "it (and runs any code stored in it)")


@dataclass
class SB3File:
    """What :func:`read_sb3` read: the manifest, SB3's plain ``data`` entries (pickled ones
    left out) and the state dicts by name (``policy``, ``policy.optimizer``)."""

    path: Path
    manifest: dict[str, Any]
    data: dict[str, Any]
    params: dict[str, Any]


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    return json_checksum(manifest, "checksum")


def save_sb3(model: Any, path: str | Path, manifest: dict[str, Any]) -> Path:
    """``model.save`` into memory, add the manifest (``manifest`` plus format, algorithm,
    step count and member checksums), and write the zip atomically (:func:`atomic_write`)."""
    buffer = io.BytesIO()
    model.save(buffer)
    with zipfile.ZipFile(buffer, "a") as z:
        files = {name: _sha256(z.read(name)) for name in z.namelist()}
        body = {**manifest, "format": FORMAT, "algorithm": type(model).__name__,
                "num_timesteps": int(model.num_timesteps), "files": files}
        body["checksum"] = _manifest_checksum(body)
        z.writestr(MANIFEST, json.dumps(body, indent=1))
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def read_sb3(path: str | Path) -> SB3File:
    """Read a zip written by :func:`save_sb3` without unpickling anything.

    Raises:
        CheckpointError: naming the file, when it is missing, not such a zip, or damaged.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no Stable-Baselines3 .zip at {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            raw = {name: z.read(name) for name in names} if MANIFEST in names else {}
    except (*READ_ERRORS, RuntimeError) as exc:
        raise CheckpointError(f"{path} is {describe_file(path)}, not a readable "
                              f"Stable-Baselines3 zip ({exc})") from None
    if MANIFEST not in names:
        raise CheckpointError(f"{path} is {describe_file(path)} without {MANIFEST}: not "
                              f"written by 'glimpse train ppo'. {TRUST_HINT}")
    try:
        manifest = json.loads(raw[MANIFEST])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: {MANIFEST} is damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: {MANIFEST} is not of format {FORMAT!r}")
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise CheckpointError(f"{path} is damaged: {MANIFEST} does not match its checksum")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != names - {MANIFEST}:
        raise CheckpointError(f"{path} is damaged: its members differ from the manifest's list")
    for name, digest in files.items():
        if _sha256(raw[name]) != digest:
            raise CheckpointError(f"{path} is damaged: member {name!r} does not match its "
                                  "checksum")
    if manifest.get("algorithm") not in ALGORITHMS:
        raise CheckpointError(f"{path}: algorithm {manifest.get('algorithm')!r} is not one of "
                              f"{ALGORITHMS}")
    try:
        data = {k: v for k, v in json.loads(raw.get("data", b"{}")).items()
                if not (isinstance(v, dict) and ":serialized:" in v)}
        params = {name.removesuffix(".pth"): torch.load(io.BytesIO(raw[name]),
                                                         map_location="cpu", weights_only=True)
                  for name in names if name.endswith(".pth")}
    except Exception as exc:  # noqa: BLE001  (any way a member can fail to load)
        raise CheckpointError(f"{path}: a member cannot be read safely ({exc})") from None
    if not isinstance(params.get("policy"), dict):
        raise CheckpointError(f"{path} holds no policy weights (policy.pth)")
    return SB3File(path, manifest, data, params)


def _policy_kwargs(f: SB3File) -> dict[str, Any]:
    spec = f.manifest.get("policy")
    try:
        if spec["extractor"] == "multiscale-cell":  # MultiScale-v0's (train multiscale-ppo)
            from agents.multiscale_extractor import multiscale_policy_kwargs
            return multiscale_policy_kwargs(**spec.get("kwargs", {}))
        return extractor_policy_kwargs(spec["extractor"], tuple(f.manifest["grid"]),
                                       **spec.get("kwargs", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{f.path}: the policy it describes cannot be rebuilt "
                              f"({type(exc).__name__}: {exc})") from None


def _load_weights(f: SB3File, policy: torch.nn.Module) -> None:
    try:
        policy.load_state_dict(f.params["policy"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{f.path}: its weights do not fit the policy it describes "
                              f"({exc})") from None


def load_sb3_policy(f: SB3File, observation_space: Any, action_space: Any) -> torch.nn.Module:
    """The trained policy of a zip read by :func:`read_sb3` (eval mode, CPU), for
    ``predict``; no algorithm object."""
    if f.manifest["algorithm"] == "MaskablePPO":
        from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy
        cls = MaskableMultiInputActorCriticPolicy
    else:
        from stable_baselines3.common.policies import MultiInputActorCriticPolicy
        cls = MultiInputActorCriticPolicy
    try:
        policy = cls(observation_space, action_space, lambda _: 0.0, **_policy_kwargs(f))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{f.path}: the policy it describes does not fit this "
                              f"environment ({exc})") from None
    _load_weights(f, policy)
    policy.set_training_mode(False)
    return policy


def load_sb3_model(f: SB3File, env: Any, device: Any, **algo_kwargs: Any) -> Any:
    """The whole algorithm of a zip read by :func:`read_sb3` on ``env`` (to continue
    training): built with the project's classes and ``algo_kwargs``, then the policy, its
    optimizer and the step counters are loaded."""
    if f.manifest["algorithm"] == "MaskablePPO":
        from sb3_contrib import MaskablePPO as algo
    else:
        from stable_baselines3 import PPO as algo
    try:
        model = algo("MultiInputPolicy", env, device=device, policy_kwargs=_policy_kwargs(f),
                     **algo_kwargs)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{f.path}: the policy it describes does not fit this "
                              f"environment ({exc})") from None
    _load_weights(f, model.policy)
    if isinstance(f.params.get("policy.optimizer"), dict):
        try:
            model.policy.optimizer.load_state_dict(f.params["policy.optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{f.path}: its optimizer state does not fit ({exc})") \
                from None
    model.num_timesteps = int(f.manifest["num_timesteps"])
    model._n_updates = int(f.data.get("_n_updates", 0))
    return model


__all__ = ["MANIFEST", "SB3File", "TRUST_HINT", "load_sb3_model", "load_sb3_policy",
           "read_sb3", "save_sb3"]
