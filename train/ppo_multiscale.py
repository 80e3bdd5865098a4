"""``glimpse train multiscale-ppo``: MaskablePPO on ``MultiScale-v0``.

Trains on the ``train/`` split of multi-scale banks (``--banks``) through the native
multi-scale vector env (SB3's ``VecEnv`` adapter, ``multiscale=True``), with the cells that
may not be opened masked and :class:`~agents.multiscale_extractor.MultiScaleCellExtractor`
reading the observations; the same rollout buffers and defaults as ``glimpse train
maskable-ppo``. Every ``--eval-freq`` env steps it plays the policy on val images
(:func:`agents.multiscale_eval.run_multiscale`), logs the error and the cost to TensorBoard,
and writes ``last.zip`` (and ``best.zip`` at the best val error); ``--resume`` continues
``last.zip``. At the end ``results.json``: the test error and mean costs at each T up to the
trained T.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sb3_contrib import MaskablePPO
from stable_baselines3.common.vec_env import VecMonitor

from agents.multiscale_eval import run_multiscale, summarise_multiscale
from agents.multiscale_extractor import multiscale_policy_kwargs, parent_rows
from agents.policies import SB3Policy
from agents.sb3_io import load_sb3_model, read_sb3, save_sb3
from glimpse_gym.envs import MultiScaleEnv
from glimpse_gym.errors import UsageError
from glimpse_gym.multiscale import MultiScaleBank
from glimpse_gym.sb3 import SB3VecEnv
from train.ppo import PPOHyper, ProgressCallback
from train.run import prepare_out, setup, write_results


@dataclass
class MultiScalePPOConfig(PPOHyper):
    """Options of ``glimpse train multiscale-ppo``."""

    banks: str = "runs/banks/cluttered-mnist-100-ms"
    """folder with train/, val/ and test/ multi-scale banks (extract-features --scales)"""
    glimpses: int = 5
    """T, glimpses per episode"""
    n_steps: int = 10
    """env steps per env per rollout (a multiple of T keeps episodes whole)"""
    channels: int = 16
    """width of the per-cell MLP's hidden layer"""
    code: int = 4
    """the per-cell MLP's output size"""
    eval_freq: int = 100_000
    """evaluate on the val split (and checkpoint) every this many env steps"""
    eval_images: int = 5000
    """val images per evaluation (all of them when the split is smaller)"""
    out: str = "runs/multiscale-ppo"
    """output folder: last.zip, best.zip, results.json, tb/ (--resume continues last.zip)"""


def _manifest(cfg: MultiScalePPOConfig, parents: list[int], bank: MultiScaleBank) -> dict:
    return {"policy": {"extractor": "multiscale-cell",
                       "kwargs": {"parents": parents, "hidden": cfg.channels, "code": cfg.code}},
            "observation": "partial", "glimpses": cfg.glimpses, "multiscale": True,
            "grid": [list(lv.grid) for lv in bank.levels],
            "trained_on": {"model_hash": bank.model_hash,
                           "levels": [list(lv.grid) for lv in bank.levels]}}


def evaluate_split(model: Any, bank: MultiScaleBank, glimpses: int,
                   max_images: int | None = None) -> dict[str, Any]:
    """The deterministic policy on ``bank``'s images: error and mean costs at each T."""
    run = run_multiscale(SB3Policy(model, "multiscale-ppo", "partial"), bank, glimpses,
                         max_images=max_images)
    return summarise_multiscale(run)


class _Callback(ProgressCallback):
    def __init__(self, cfg: MultiScalePPOConfig, out: Path, val: MultiScaleBank,
                 manifest: dict) -> None:
        super().__init__()
        self.cfg, self.out, self.val, self.manifest = cfg, out, val, manifest
        self.best, self.last_eval, self.history = float("inf"), 0, []

    def _on_step(self) -> bool:
        self.advance()
        if self.num_timesteps - self.last_eval >= self.cfg.eval_freq:
            self.last_eval = self.num_timesteps
            row = evaluate_split(self.model, self.val, self.cfg.glimpses, self.cfg.eval_images)
            t = self.cfg.glimpses
            self.logger.record("eval/error", row["error"][t])
            self.logger.record("eval/full_resolution_pixels", row["full_resolution_pixels"][t])
            self.history.append({"timesteps": self.num_timesteps, "error": row["error"][t],
                                 "full_resolution_pixels": row["full_resolution_pixels"][t]})
            if row["error"][t] < self.best:
                self.best = row["error"][t]
                save_sb3(self.model, self.out / "best.zip", self.manifest)
            save_sb3(self.model, self.out / "last.zip", self.manifest)
        return True


def train_multiscale_ppo(cfg: MultiScalePPOConfig) -> dict[str, Any]:
    """Train, evaluate on val along the way and on test at the end; return the results."""
    start = time.perf_counter()
    device = setup(cfg.device, cfg.threads)
    banks = {s: MultiScaleBank.load(Path(cfg.banks).expanduser() / s)
             for s in ("train", "val", "test")}
    out = prepare_out(cfg.out, checkpoints=("last.zip",), resume=cfg.resume,
                      overwrite=cfg.overwrite)
    venv = VecMonitor(SB3VecEnv(num_envs=cfg.num_envs, multiscale=True,
                                bank=str(banks["train"].path), glimpses=cfg.glimpses))
    venv.seed(cfg.seed)
    parents = parent_rows(MultiScaleEnv(banks["train"], glimpses=cfg.glimpses))
    manifest = _manifest(cfg, parents, banks["train"])
    hyper = cfg.sb3_kwargs(out, maskable=True)
    if cfg.resume:
        f = read_sb3(out / "last.zip")
        if f.manifest.get("trained_on") != manifest["trained_on"]:
            raise UsageError(f"--resume: {out / 'last.zip'} was trained on other banks "
                             f"({f.manifest.get('trained_on')})")
        model = load_sb3_model(f, venv, device, **hyper)
        print(f"resuming after {model.num_timesteps} of {cfg.total_timesteps} env steps")
    else:
        model = MaskablePPO("MultiInputPolicy", venv, device=device,
                            policy_kwargs=multiscale_policy_kwargs(parents, cfg.channels,
                                                                   cfg.code), **hyper)
    callback = _Callback(cfg, out, banks["val"], manifest)
    steps_before, learn_start = model.num_timesteps, time.perf_counter()
    if cfg.total_timesteps > model.num_timesteps:
        model.learn(cfg.total_timesteps - model.num_timesteps, callback=callback,
                    reset_num_timesteps=not cfg.resume, tb_log_name="ppo")
    learn_seconds = time.perf_counter() - learn_start
    save_sb3(model, out / "last.zip", manifest)
    test = evaluate_split(model, banks["test"], cfg.glimpses)
    t = cfg.glimpses
    results = {"algorithm": "MaskablePPO", "config": asdict(cfg), "test": test,
               "test_error": test["error"][t], "val_history": callback.history,
               "timesteps": model.num_timesteps,
               "env_steps_per_s": (model.num_timesteps - steps_before) / max(learn_seconds, 1e-9),
               "wall_time_s": time.perf_counter() - start}
    print(f"MaskablePPO on MultiScale-v0: test error at T={t} {test['error'][t]:.2%}, "
          f"{test['full_resolution_pixels'][t]:,.0f} full-resolution pixels per image; "
          f"{results['env_steps_per_s']:.0f} env-steps/s")
    write_results(out, results, ["last.zip", "best.zip", "tb"])
    return results


__all__ = ["MultiScalePPOConfig", "evaluate_split", "train_multiscale_ppo"]
