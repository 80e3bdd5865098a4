"""Policies from the command line's specs, read safely and checked against the bank.

:func:`make_policy` turns ``random``, ``centre``, ``ordered-logits``, ``true-label`` or
``NAME=PATH`` into a :class:`~agents.policies.GlimpsePolicy`. A path is recognised by its
contents, not its name: a Saccader or REINFORCE checkpoint (read with ``weights_only=True``,
checksum checked) or a ``glimpse train ppo`` zip (:mod:`agents.sb3_io`: nothing unpickled).
Anything else (a BagNet checkpoint, a ``results.json``, SB3 zips from elsewhere) is refused with
a message that says what the file is. :func:`check_trained_on` refuses a policy trained on a
bank of another BagNet, grid or class count, naming both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.policies import (
    CentrePolicy,
    GlimpsePolicy,
    OrderedLogitsPolicy,
    RandomPolicy,
    SaccaderAgent,
    SB3Policy,
    TrueLabelPolicy,
)
from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.fileio import ZIP_MAGIC, read_torch

BUILTIN = {"random": RandomPolicy, "centre": CentrePolicy, "ordered-logits": OrderedLogitsPolicy,
           "true-label": TrueLabelPolicy}


def _bank_text(d: dict[str, Any]) -> str:
    grid = d.get("grid")
    shape = f"{grid[0]}x{grid[1]} grid, " if isinstance(grid, list) and len(grid) == 2 else ""
    return (f"{shape}{d.get('feature_dim', '?')}-d features, {d.get('num_classes', '?')} "
            f"classes ({d.get('dataset', '?')}, BagNet {d.get('model_hash', '?')})")


def check_trained_on(what: str, trained: dict[str, Any] | None, source: GlimpseSource) -> None:
    """Raise :class:`UsageError` when ``trained`` (a source description recorded at
    training) names another BagNet, grid, feature size or class count than ``source``."""
    if not isinstance(trained, dict):
        raise CheckpointError(f"{what} does not record the bank it was trained on")
    have = source.description
    keys = ("model_hash", "grid", "feature_dim", "num_classes")
    if any(k in trained and trained[k] != have.get(k) for k in keys):
        raise UsageError(f"{what} was trained on a bank with {_bank_text(trained)}; this bank "
                         f"has {_bank_text(have)}. Run it on banks of the BagNet it was "
                         "trained with")


def make_policy(spec: str, source: GlimpseSource, seed: int = 0) -> GlimpsePolicy:
    """A policy from its command-line spec, checked against ``source`` (the bank it will run
    on). See the module docstring."""
    if spec in BUILTIN:
        return BUILTIN[spec](seed) if spec == "random" else BUILTIN[spec]()
    if "=" not in spec:
        raise UsageError(f"unknown policy {spec!r}: use one of {', '.join(BUILTIN)}, or "
                         "NAME=PATH for a trained agent (.pt from train saccader / train "
                         "reinforce, .zip from train ppo / maskable-ppo)")
    name, path = spec.split("=", 1)
    p = Path(path).expanduser()
    what = f"policy {name!r} ({p})"
    if not name:
        raise UsageError(f"--policy {spec!r}: give the policy a name, as NAME=PATH")
    if not p.is_file():
        raise CheckpointError(f"{what}: no file there")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{what}: cannot be read ({exc.strerror or exc})") from None
    if head.startswith(ZIP_MAGIC) and _is_sb3_zip(p):
        return _sb3_policy(p, name, what, source)
    ckpt = read_torch(p, "policy checkpoint")
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == "glimpse-gym-saccader/1":
        from agents.saccader import saccader_from_payload
        net, ckpt = saccader_from_payload(ckpt, p)
        check_trained_on(what, {**ckpt.get("bank", {}), **ckpt["net"]}, source)
        return SaccaderAgent(net, name=name)
    if fmt == "glimpse-gym-reinforce/1":
        from agents.reinforce import ReinforceAgent, reinforce_from_payload
        net, ckpt = reinforce_from_payload(ckpt, p)
        check_trained_on(what, {**ckpt.get("bank", {}),
                                "feature_dim": ckpt["net"].get("feature_dim")}, source)
        h, w = source.grid
        if ckpt["net"].get("num_cells") != h * w:
            raise UsageError(f"{what} was trained on {ckpt['net'].get('num_cells')} cells; this "
                             f"bank has a {h}x{w} grid ({h * w} cells)")
        return ReinforceAgent(net, name=name)
    if fmt == "glimpse-gym-bagnet/1":
        raise UsageError(f"{what} is a BagNet checkpoint, not a policy; pass it as "
                         "--checkpoint (the occlusion test's BagNet)")
    raise CheckpointError(f"{what} is neither a Saccader nor a REINFORCE checkpoint (format "
                          f"{fmt!r}) nor a zip from 'glimpse train ppo'")


def _is_sb3_zip(path: Path) -> bool:
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return "policy.pth" in z.namelist() or "data" in z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return path.suffix == ".zip"  # a damaged zip: read_sb3 says what is wrong


def _sb3_policy(path: Path, name: str, what: str, source: GlimpseSource) -> SB3Policy:
    from gymnasium import spaces

    from agents.sb3_io import load_sb3_policy, read_sb3
    from glimpse_gym.envs.glimpse_env import observation_space

    f = read_sb3(path)
    check_trained_on(what, f.manifest.get("trained_on"), source)
    observation = f.manifest.get("observation", "full")
    space = observation_space(source, observation, int(f.manifest.get("glimpses", 6)))
    policy = load_sb3_policy(f, space, spaces.Discrete(source.grid[0] * source.grid[1]))
    # by reference (index), the policy reads the grids of the bank it trained on: evaluated
    # on any bank, it is handed the full grids instead (the same numbers, see extractors)
    return SB3Policy(policy, name=name,
                     observation="full" if observation == "index" else observation)


__all__ = ["BUILTIN", "check_trained_on", "make_policy"]
