"""``glimpse demo``: the main job on the embedded default, offline.

Loads the shipped digits BagNet, extracts feature banks of the ``digits`` splits, and prints
what a glimpse policy can get out of them: the full-image BagNet against classifying from T
cells chosen at random, by ordered logits, and by the true label's logits (an oracle).
Then (unless ``--no-agents``) it trains every agent briefly on those banks, the Saccader
(steps 2 and 3), MaskablePPO, PPO and REINFORCE, and ends with ``glimpse evaluate``'s
comparison of all of them with the non-learned policies on the digits test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glimpse_gym.envs import load_source
from glimpse_gym.fileio import write_json
from train.evaluate import print_baselines
from train.extract_features import ExtractConfig, extract_features
from train.run import RunOptions, prepare_out, report, setup


@dataclass
class DemoConfig(RunOptions):
    """Options of ``glimpse demo``."""

    out: str = "runs/demo"
    """folder for the demo's feature banks and summary.json"""
    glimpses: int = 6
    """T, cells per image for the glimpse comparisons"""
    agents: bool = True
    """also train every agent briefly and print the comparison of all policies"""


def demo(cfg: DemoConfig) -> dict[str, float]:
    """Extract the digits banks with the embedded BagNet and print the comparison."""
    device = setup(cfg.device, cfg.threads)
    prepare_out(cfg.out, finished=("summary.json",), overwrite=cfg.overwrite)
    banks = extract_features(ExtractConfig(checkpoint="default", out=str(Path(cfg.out) / "banks"),
                                           overwrite=True, device=cfg.device,
                                           threads=cfg.threads, progress=cfg.progress))
    table = print_baselines(load_source(banks["test"]), cfg.glimpses, cfg.seed, device)
    write_json(Path(cfg.out) / "summary.json", table)
    if cfg.agents:
        train_agents(cfg)
    report(cfg.out, ["banks", "summary.json", "saccader", "maskable-ppo", "ppo", "reinforce",
                     "eval"])
    return table


def train_agents(cfg: DemoConfig) -> dict:
    """Brief training of every agent on the demo's digits banks, then the comparison."""
    from train.evaluate import EvaluateConfig, evaluate
    from train.ppo import PPOConfig, train_maskable_ppo, train_ppo
    from train.reinforce import ReinforceConfig, train_reinforce
    from train.saccader import SaccaderConfig, train_saccader

    out, banks = Path(cfg.out), str(Path(cfg.out) / "banks")
    common = {"device": cfg.device, "threads": cfg.threads, "progress": cfg.progress,
              "seed": cfg.seed, "overwrite": True}  # the demo's own folders (checked above)
    print("\n== Saccader, steps 2 and 3 ==")
    train_saccader(SaccaderConfig(banks=banks, out=str(out / "saccader"), where_channels=32,
                                  mixed_channels=32, batch_size=128, glimpses=cfg.glimpses,
                                  eval_glimpses=str(cfg.glimpses), **common))
    for name, run in (("maskable-ppo", train_maskable_ppo), ("ppo", train_ppo)):
        print(f"\n== {name} ==")
        run(PPOConfig(banks=banks, out=str(out / name), total_timesteps=150_000,
                      num_envs=256, batch_size=1024, eval_freq=75_000,
                      glimpses=cfg.glimpses, **common))
    print("\n== REINFORCE ==")
    train_reinforce(ReinforceConfig(banks=banks, out=str(out / "reinforce"), iterations=400,
                                    num_envs=512, eval_every=200, glimpses=cfg.glimpses,
                                    **common))
    print("\n== comparison ==")
    return evaluate(EvaluateConfig(
        bank=str(Path(banks) / "test"), checkpoint="default", out=str(out / "eval"),
        occlusion_glimpses=cfg.glimpses, seed=cfg.seed, overwrite=True, device=cfg.device,
        threads=cfg.threads, progress=cfg.progress,
        policy=["random", "centre", "ordered-logits",
                f"saccader={out / 'saccader' / 'policy.pt'}",
                f"maskable-ppo={out / 'maskable-ppo' / 'last.zip'}",
                f"ppo={out / 'ppo' / 'last.zip'}",
                f"reinforce={out / 'reinforce' / 'best.pt'}"]))
