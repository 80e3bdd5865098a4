"""The package's layers: ``glimpse_gym`` works without the RL extra, imports run one way
(``train`` -> ``agents`` -> ``glimpse_gym``), and modules stay small."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("glimpse_gym", "agents", "train")

# Runs in a fresh interpreter in which the RL extra, agents and train cannot be imported.
CORE_ONLY = textwrap.dedent("""
    import importlib, importlib.abc, os, pkgutil, sys

    BLOCKED = {"stable_baselines3", "sb3_contrib", "tensorboard", "matplotlib"}
    BLOCKED |= set(sys.argv[1:])

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import gymnasium as gym
    import glimpse_gym
    for module in pkgutil.walk_packages(glimpse_gym.__path__, "glimpse_gym."):
        if module.name != "glimpse_gym.sb3":  # the SB3 adapter: needs the extra, says so
            importlib.import_module(module.name)
    root = os.environ.get("TASK_DATA_ROOT")
    for env_id, defaults in glimpse_gym.ENV_IDS.items():
        kwargs = {}
        if "checkpoint" in defaults:  # a task id: a few test images of its dataset
            if not root:
                continue
            kwargs = {"root": root, "split": "test", "max_images": 16}
        env = gym.make(env_id, **kwargs)
        env.reset(seed=0)
        env.step(5)
        envs = gym.make_vec(env_id, num_envs=4, **kwargs)
        envs.reset(seed=0)
        envs.step([1, 2, 3, 4])
    import train.cli
""")


def test_the_environment_needs_no_rl_extra() -> None:
    """Every module of glimpse_gym (but the SB3 adapter) imports, and every registered id
    makes, resets and steps (single and vector), with SB3, sb3-contrib, TensorBoard,
    matplotlib, ``agents`` and ``train`` unimportable."""
    env = {**os.environ, "TASK_DATA_ROOT": str(SHARED_DATA)} if SHARED_DATA.is_dir() else None
    run = subprocess.run([sys.executable, "-c", CORE_ONLY, "agents", "train"], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=env)
    assert "No module named 'train'" in run.stderr, run.stderr  # the blocker is in place
    assert "Traceback" in run.stderr and run.stderr.count("Error") == 1, run.stderr


def test_the_command_line_names_the_missing_extra() -> None:
    code = CORE_ONLY + "sys.exit(train.cli.main(['--help']))\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("glimpse: error: the glimpse command needs the RL extra")
    assert "pip install '.[rl]'" in run.stderr


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way_and_modules_stay_small(package: str) -> None:
    below = {"glimpse_gym": ("agents", "train"), "agents": ("train",), "train": ()}[package]
    for path in sorted((REPO / package).rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        assert lines <= 400, f"{path.relative_to(REPO)} has {lines} lines (at most 400)"
        for name in below:
            assert f"\nfrom {name}" not in text and f"\nimport {name}" not in text, (
                f"{path.relative_to(REPO)} imports {name}")


@pytest.mark.parametrize("script", sorted((REPO / "benchmarks").glob("*.py")),
                         ids=lambda p: p.name)
def test_benchmark_scripts_import(script: Path) -> None:
    """Every benchmark imports (what it uses from the package exists); ``main`` is only run
    by ``make bench-*``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)) or script.stem == "crafted"
