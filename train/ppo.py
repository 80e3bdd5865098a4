"""Train PPO or MaskablePPO (Stable-Baselines3) on Glimpse-v0's native vector env.

The policy sees the observation through :class:`agents.extractors.CellExtractor` (one
small MLP per cell, linear read-outs for the action logits; the default, and the cheaper) or
:class:`agents.extractors.GridExtractor` (a small conv net over the cell grid); the compact
``glimpses`` observation through :class:`agents.extractors.SequenceExtractor`. Every
``--eval-freq`` env steps the deterministic policy is evaluated on every image of the
validation split (TensorBoard ``eval/accuracy``, ``eval/coverage``; the best model is kept),
a checkpoint is written, and at the end the test split's accuracy at T glimpses is measured
and saved to ``OUT/results.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecMonitor
from tqdm import tqdm

from agents.buffers import GlimpseRolloutBuffer, MaskableGlimpseRolloutBuffer
from agents.evaluation import evaluate_on_split, sb3_policy
from agents.extractors import EXTRACTORS, extractor_policy_kwargs
from agents.loading import check_trained_on
from agents.sb3_io import load_sb3_model, read_sb3, save_sb3
from glimpse_gym.envs.checks import OBSERVATION_MODES
from glimpse_gym.errors import UsageError
from glimpse_gym.sb3 import SB3VecEnv
from train.run import AgentOptions, TrainOptions, prepare_out, setup, split_source, write_results


@dataclass
class PPOHyper(TrainOptions):
    """The PPO options every ``glimpse train`` PPO command shares."""

    num_envs: int = 1024
    """parallel episodes in the native vector env"""
    total_timesteps: int = 300_000
    """env steps to train for (glimpses, not episodes)"""
    n_steps: int = 12
    """env steps per env per rollout (a multiple of T keeps episodes whole)"""
    batch_size: int = 4096
    """PPO minibatch size"""
    n_epochs: int = 1
    """PPO epochs per rollout (one pass of large batches: the updates dominate the time)"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    ent_coef: float = 0.01
    """entropy bonus"""
    gamma: float = 1.0
    """discount (the only reward comes at the end of a short episode)"""

    def sb3_kwargs(self, out: Path, maskable: bool) -> dict[str, Any]:
        """These options as keyword arguments of SB3's (Maskable)PPO."""
        return dict(n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs,
                    learning_rate=self.learning_rate, ent_coef=self.ent_coef,
                    gamma=self.gamma, seed=self.seed, tensorboard_log=str(out / "tb"),
                    rollout_buffer_class=buffer_class(maskable))


@dataclass
class PPOConfig(AgentOptions, PPOHyper):
    """Options of ``glimpse train ppo`` and ``glimpse train maskable-ppo``."""

    observation: str = "full"
    """full (every cell's features), partial (only the cells seen so far, on the grid),
    glimpses (the glimpses so far as a short sequence: the compact mode) or index (the
    image's row in the bank: the policy reads the grid from the bank itself)"""
    extractor: str = "auto"
    """cell (per-cell MLP, linear action read-out) or grid (conv net + SB3's MLP heads) for
    the full, partial and index observations; sequence (per-glimpse MLP, averaged) for
    glimpses; auto: sequence for glimpses, else cell"""
    features_dim: int = 128
    """width of the GridExtractor output, or of SequenceExtractor's pooled code"""
    channels: int = 16
    """width of CellExtractor's per-cell hidden layer, of GridExtractor's conv layers, or of
    SequenceExtractor's per-glimpse hidden layer"""
    code: int = 4
    """CellExtractor's output size per cell (the heads read H*W*(code + 1) values)"""
    eval_freq: int = 100_000
    """evaluate on the val split (and checkpoint) every this many env steps"""
    out: str = "runs/ppo"
    """output folder: last.zip, best.zip, results.json, tb/ (--resume continues last.zip)"""


def _algo(maskable: bool) -> type:
    if maskable:
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    return PPO


def buffer_class(maskable: bool) -> type:
    """The rollout buffer: SB3's Dict buffer with fewer copies (agents.buffers)."""
    return MaskableGlimpseRolloutBuffer if maskable else GlimpseRolloutBuffer


def resolve_extractor(cfg: PPOConfig) -> PPOConfig:
    """``cfg`` with ``extractor="auto"`` resolved; a UsageError when the extractor cannot read
    the observation mode."""
    if cfg.observation not in OBSERVATION_MODES:
        raise UsageError(f"--observation must be one of {OBSERVATION_MODES}, got "
                         f"{cfg.observation!r}")
    extractor = cfg.extractor
    if extractor == "auto":
        extractor = "sequence" if cfg.observation == "glimpses" else "cell"
    if extractor not in EXTRACTORS:
        raise UsageError(f"--extractor must be auto or one of {EXTRACTORS}, got {extractor!r}")
    if (cfg.observation == "glimpses") != (extractor == "sequence"):
        raise UsageError(f"--extractor {extractor} cannot read --observation "
                         f"{cfg.observation}: the sequence extractor reads the glimpses "
                         "observation, cell and grid read full, partial and index (or "
                         "leave --extractor auto)")
    return replace(cfg, extractor=extractor)


def _policy_spec(cfg: PPOConfig, source: Any) -> dict[str, Any]:
    """The extractor and its sizes, as the zip's manifest records them (by reference, also
    the training bank the extractor reads the grids from, and D)."""
    if cfg.extractor == "cell":
        kwargs = {"channels": cfg.channels, "code": cfg.code}
    else:
        kwargs = {"channels": cfg.channels, "features_dim": cfg.features_dim}
    if cfg.observation == "index":
        kwargs.update(bank=split_source(cfg.banks, "train"), feature_dim=source.feature_dim)
    return {"extractor": cfg.extractor, "kwargs": kwargs}


def policy_kwargs(cfg: PPOConfig, source: Any) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` of the extractor ``cfg`` names, for the grid of ``source``."""
    return extractor_policy_kwargs(**_policy_spec(cfg, source)["kwargs"],
                                   extractor=cfg.extractor, grid=tuple(source.grid))


def evaluation_mode(observation: str) -> str:
    """The observation a policy trained on ``observation`` is evaluated with: by reference
    (``index``) it reads the ``full`` grids, which work on any split's bank."""
    return "full" if observation == "index" else observation


def _save(model: Any, path: Path, cfg: PPOConfig, source: Any) -> None:
    """The zip with its manifest (:func:`agents.sb3_io.save_sb3`), written atomically."""
    save_sb3(model, path, {"policy": _policy_spec(cfg, source), "observation": cfg.observation,
                           "glimpses": cfg.glimpses, "trained_on": source.description,
                           "grid": source.description["grid"]})


class ProgressCallback(BaseCallback):
    """A tqdm bar over the env steps (``cfg.progress``, ``cfg.total_timesteps``), advanced by
    :meth:`advance` in ``_on_step``; subclasses set ``self.cfg``."""

    cfg: Any
    bar: tqdm | None = None

    def _on_training_start(self) -> None:
        if self.cfg.progress:  # tqdm, not SB3's bar (that one needs the `rich` package)
            self.bar = tqdm(total=self.cfg.total_timesteps, initial=self.num_timesteps,
                            unit="step", unit_scale=True, desc="env steps", dynamic_ncols=True)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)


class GlimpseCallback(ProgressCallback):
    """Episode accuracy and coverage to TensorBoard; periodic val evaluation and checkpoints."""

    def __init__(self, cfg: PPOConfig, out: Path, source: Any) -> None:
        super().__init__()
        self.cfg, self.out, self.source = cfg, out, source
        self.correct: list[float] = []
        self.coverage: list[float] = []
        self.best = -1.0
        self.last_eval = 0
        self.history: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        self.advance()
        infos = self.locals["infos"]
        for i in np.flatnonzero(self.locals["dones"]):  # episodes end together: few steps
            self.correct.append(float(infos[i]["correct"]))
            self.coverage.append(infos[i]["coverage"])
        if self.num_timesteps - self.last_eval >= self.cfg.eval_freq:
            self.last_eval = self.num_timesteps
            self.evaluate()
        return True

    def _on_rollout_end(self) -> None:
        if self.correct:
            self.logger.record("rollout/episode_accuracy", float(np.mean(self.correct)))
            self.logger.record("rollout/episode_coverage", float(np.mean(self.coverage)))
            self.correct, self.coverage = [], []

    def evaluate(self) -> dict[str, float]:
        result = evaluate_on_split(sb3_policy(self.model), glimpses=self.cfg.glimpses,
                                   observation=evaluation_mode(self.cfg.observation),
                                   max_images=self.cfg.eval_images,
                                   **split_source(self.cfg.banks, "val"))
        self.logger.record("eval/accuracy", result["accuracy"])
        self.logger.record("eval/coverage", result["coverage"])
        self.history.append({"timesteps": self.num_timesteps, **result})
        if result["accuracy"] > self.best:
            self.best = result["accuracy"]
            _save(self.model, self.out / "best.zip", self.cfg, self.source)
        _save(self.model, self.out / "last.zip", self.cfg, self.source)
        return result


def train_ppo(cfg: PPOConfig, maskable: bool = False) -> dict[str, Any]:
    """Train, evaluate on val along the way and on test at the end; return the results."""
    start = time.perf_counter()
    cfg = resolve_extractor(cfg)
    device = setup(cfg.device, cfg.threads)
    out = prepare_out(cfg.out, checkpoints=("last.zip",), resume=cfg.resume,
                      overwrite=cfg.overwrite)
    algo = _algo(maskable)
    venv = VecMonitor(SB3VecEnv(num_envs=cfg.num_envs, glimpses=cfg.glimpses,
                                observation=cfg.observation, **split_source(cfg.banks, "train")))
    venv.seed(cfg.seed)
    source = venv.get_attr("source")[0]
    hyper = cfg.sb3_kwargs(out, maskable)
    if cfg.resume:
        f = read_sb3(out / "last.zip")
        check_trained_on(f"--resume {out / 'last.zip'}", f.manifest.get("trained_on"), source)
        if f.manifest["algorithm"] != algo.__name__:
            command = "maskable-ppo" if f.manifest["algorithm"] == "MaskablePPO" else "ppo"
            raise UsageError(f"--resume: {out / 'last.zip'} is a {f.manifest['algorithm']} run; "
                             f"continue it with 'glimpse train {command}'")
        model = load_sb3_model(f, venv, device, **hyper)
        if cfg.observation == "index":  # read the grids from the bank the env indexes now
            model.policy.features_extractor.grids.bind(source)
        print(f"resuming after {model.num_timesteps} of {cfg.total_timesteps} env steps")
    else:
        model = algo("MultiInputPolicy", venv, device=device,
                     policy_kwargs=policy_kwargs(cfg, source), **hyper)
    callback = GlimpseCallback(cfg, out, source)
    remaining = cfg.total_timesteps - model.num_timesteps
    learn_start = time.perf_counter()
    steps_before = model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callback, reset_num_timesteps=not cfg.resume,
                    tb_log_name="ppo")
    learn_seconds = time.perf_counter() - learn_start
    _save(model, out / "last.zip", cfg, source)
    # ---------------------------------------------------------------- final test
    test = evaluate_on_split(sb3_policy(model), glimpses=cfg.glimpses,
                             observation=evaluation_mode(cfg.observation),
                             **split_source(cfg.banks, "test"))
    results = {
        "algorithm": "MaskablePPO" if maskable else "PPO",
        "config": asdict(cfg),
        "data": {"train": source.description},
        "test": test,
        "val_history": callback.history,
        "timesteps": model.num_timesteps,
        "env_steps_per_s": (model.num_timesteps - steps_before) / max(learn_seconds, 1e-9),
        "wall_time_s": time.perf_counter() - start,
    }
    print(f"{results['algorithm']}: test accuracy at T={cfg.glimpses} "
          f"{test['accuracy']:.4f} (error {1 - test['accuracy']:.2%}), coverage "
          f"{test['coverage']:.3f}, {test['num_images']} images; "
          f"{results['env_steps_per_s']:.0f} env-steps/s")
    write_results(out, results, ["last.zip", "best.zip", "tb"])
    return results


def train_maskable_ppo(cfg: PPOConfig) -> dict[str, Any]:
    """MaskablePPO (sb3-contrib): visited cells are masked out of the policy."""
    return train_ppo(cfg, maskable=True)
