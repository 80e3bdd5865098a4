"""``glimpse train reinforce``: the RAM-style baseline, trained through the vector env.

Each iteration resets the native vector env (compact ``glimpses`` observations, torch
arrays) onto the next images of every env's stream (seeded by the iteration, so a resumed
run sees the same images), runs T glimpses sampling from the agent's masked location head,
and takes the env's end-of-episode reward (1 iff its prediction from the glimpsed cells is
right). Loss: REINFORCE with the learned baseline (advantage = reward - value at each
glimpse), the value's squared error, minus an entropy bonus. TensorBoard (``OUT/tb``),
periodic val evaluation, ``OUT/last.pt`` and ``OUT/best.pt``, ``--resume``, and at the end
the test accuracy at T in ``OUT/results.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.evaluation import run_policy, summarise
from agents.loading import check_trained_on
from agents.reinforce import FORMAT, RamAgent, ReinforceAgent, load_reinforce, slot_features
from glimpse_gym.envs import GlimpseVectorEnv
from glimpse_gym.fileio import save_payload
from train.run import AgentOptions, prepare_out, setup, split_source, write_results


@dataclass
class ReinforceConfig(AgentOptions):
    """Options of ``glimpse train reinforce``."""

    num_envs: int = 1024
    """episodes per iteration (the vector env's size)"""
    iterations: int = 1500
    """training iterations (each: num_envs episodes of T glimpses)"""
    lr: float = 1e-3
    """Adam learning rate"""
    value_weight: float = 0.5
    """weight of the baseline's squared error"""
    entropy: float = 0.01
    """entropy bonus"""
    hidden: int = 128
    """GRU width"""
    eval_every: int = 250
    """evaluate on val (and keep best.pt) every this many iterations"""
    out: str = "runs/reinforce"
    """output folder: last.pt, best.pt, results.json, tb/"""


def episode_loss(net: RamAgent, envs: GlimpseVectorEnv, seed: int, value_weight: float,
                 entropy_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch of episodes through ``envs`` (glimpses, torch arrays) and its loss."""
    obs, _ = envs.reset(seed=seed)
    n, d = envs.num_envs, envs.feature_shape[2]
    h, last_features, last_cell = net.initial_state(n, envs.device)
    log_probs, values, entropies = [], [], []
    reward = None
    for t in range(envs.glimpses):
        if t:
            last_features = slot_features(obs["features"], t - 1, d)
        logits, value, h = net(h, last_features, last_cell, obs["visited"])
        dist = torch.distributions.Categorical(logits=logits)
        cell = dist.sample()
        log_probs.append(dist.log_prob(cell))
        entropies.append(dist.entropy())
        values.append(value)
        obs, reward, *_ = envs.step(cell)
        last_cell = cell
    reward = reward.float()
    values_t = torch.stack(values, 1)
    advantage = (reward[:, None] - values_t).detach()
    policy = -(advantage * torch.stack(log_probs, 1)).sum(1).mean()
    value_loss = ((values_t - reward[:, None]) ** 2).mean()
    entropy = torch.stack(entropies, 1).mean()
    loss = policy + value_weight * value_loss - entropy_weight * entropy
    return loss, {"reward": reward.mean().item(), "value_loss": value_loss.item(),
                  "entropy": entropy.item()}


def _evaluate(net: RamAgent, cfg: ReinforceConfig, split: str, limit: int | None
              ) -> dict[str, float]:
    run = run_policy(ReinforceAgent(net), max_glimpses=cfg.glimpses, max_images=limit,
                     **split_source(cfg.banks, split))
    summary = summarise(run, net.num_cells)
    net.train()
    return {"accuracy": summary["accuracy"][cfg.glimpses],
            "coverage": summary["coverage"][cfg.glimpses], "num_images": len(run.labels)}


def train_reinforce(cfg: ReinforceConfig) -> dict[str, Any]:
    """Train, evaluate on val along the way and on test at the end; return the results."""
    start = time.perf_counter()
    device = setup(cfg.device, cfg.threads)
    out = prepare_out(cfg.out, checkpoints=("last.pt",), resume=cfg.resume,
                      overwrite=cfg.overwrite)
    envs = GlimpseVectorEnv(cfg.num_envs, glimpses=cfg.glimpses, observation="glimpses",
                            array_type="torch", copy=False, device=str(device),
                            **split_source(cfg.banks, "train"))
    torch.manual_seed(cfg.seed)
    h, w, d = envs.feature_shape
    net = RamAgent(d, h * w, hidden=cfg.hidden).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    it, best, history = 0, -1.0, []
    if cfg.resume:
        net_loaded, ckpt = load_reinforce(out / "last.pt")
        check_trained_on(f"--resume {out / 'last.pt'}", {**ckpt.get("bank", {}),
                         "feature_dim": ckpt["net"].get("feature_dim")}, envs.source)
        net.load_state_dict(net_loaded.state_dict())
        opt.load_state_dict(ckpt["optimizer"])
        it, best, history = ckpt["iteration"], ckpt["best"], ckpt["history"]
        torch.set_rng_state(ckpt["rng"])
        print(f"resuming after iteration {it} of {cfg.iterations}")
    writer = SummaryWriter(str(out / "tb"))

    def save(path: Path) -> None:
        save_payload({"format": FORMAT, "iteration": it, "best": best, "history": history,
                           "net": {"feature_dim": d, "num_cells": h * w, "hidden": cfg.hidden},
                           "state_dict": net.state_dict(), "optimizer": opt.state_dict(),
                           "config": asdict(cfg), "rng": torch.get_rng_state(),
                           "bank": envs.source.description}, path)

    bar = tqdm(total=cfg.iterations, initial=it, desc="iterations", disable=not cfg.progress,
               dynamic_ncols=True)
    t0, episodes = time.perf_counter(), 0
    while it < cfg.iterations:
        loss, stats = episode_loss(net, envs, cfg.seed * 1_000_003 + it, cfg.value_weight,
                                   cfg.entropy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        episodes += cfg.num_envs
        for k, v in stats.items():
            writer.add_scalar(f"train/{k}", v, it)
        bar.update(1)
        bar.set_postfix(reward=f"{stats['reward']:.3f}")
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            val = _evaluate(net, cfg, "val", cfg.eval_images)
            rate = episodes * cfg.glimpses / (time.perf_counter() - t0)
            writer.add_scalar("eval/accuracy", val["accuracy"], it)
            writer.add_scalar("eval/coverage", val["coverage"], it)
            writer.add_scalar("train/env_steps_per_s", rate, it)
            history.append({"iteration": it, **val, "env_steps_per_s": rate})
            if val["accuracy"] > best:
                best = val["accuracy"]
                save(out / "best.pt")
            save(out / "last.pt")
    bar.close()
    best_net = load_reinforce(out / "best.pt")[0] if (out / "best.pt").exists() else net
    test = _evaluate(best_net, cfg, "test", None)
    results = {"config": asdict(cfg), "data": {"train": envs.source.description},
               "test": test, "val_history": history,
               "iterations": it, "wall_time_s": time.perf_counter() - start}
    writer.close()
    print(f"REINFORCE (best val checkpoint): test accuracy at T={cfg.glimpses} "
          f"{test['accuracy']:.4f} (error {1 - test['accuracy']:.2%}), coverage "
          f"{test['coverage']:.3f}, {test['num_images']} images")
    write_results(out, results, ["last.pt", "best.pt", "tb"])
    return results


__all__ = ["ReinforceConfig", "episode_loss", "train_reinforce"]
