"""MaskablePPO on MultiScale-v0: the extractor, ``glimpse train multiscale-ppo`` with its
checkpoints and --resume, and the zip in ``glimpse evaluate-multiscale``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.multiscale_extractor import MultiScaleCellExtractor, parent_rows
from glimpse_gym.envs import MultiScaleEnv
from glimpse_gym.errors import CheckpointError
from train.evaluate_multiscale import MultiScaleEvalConfig, evaluate_multiscale
from train.ppo_multiscale import MultiScalePPOConfig, train_multiscale_ppo


def test_the_extractor_reads_each_cell_and_its_parent(multiscale_banks) -> None:
    bank = multiscale_banks[1]["test"]
    env = MultiScaleEnv(bank, glimpses=3)
    parents = parent_rows(env)
    # a level-1 cell's parent is its level-0 cell; a level-2 cell's, its level-1 action
    assert parents[:36] == bank.levels[1].parent.tolist()
    assert parents[36:] == (4 + bank.levels[2].parent).tolist()
    extractor = MultiScaleCellExtractor(env.observation_space, parents)
    obs, _ = env.reset(seed=0)
    env.step(7)  # open level-1 cell 7: its children's parent rows fill in
    obs, *_ = env.step(36 + int(bank.levels[2].children(7)[0]))
    tensors = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
    out = extractor(tensors).view(136, 6)
    assert out.shape == (136, 6)
    child = 36 + int(bank.levels[2].children(7)[0])
    assert out[7, 4] == 1 and out[child, 4] == 1 and out[8, 4] == 0  # visited bits
    assert out[:36, 5].all() and out[child, 5] == 1  # parents open
    other = 36 + int(bank.levels[2].children(8)[0])
    assert out[other, 5] == 0  # cell 8 is closed, so is its child's parent


def test_train_multiscale_ppo_resumes_and_its_zip_is_evaluated(multiscale_banks, tmp_path):
    root, _ = multiscale_banks
    base = dict(banks=str(root), glimpses=3, num_envs=32, n_steps=6, batch_size=96,
                eval_freq=192, eval_images=60, device="cpu", progress=False)
    first = train_multiscale_ppo(MultiScalePPOConfig(**base, total_timesteps=192,
                                                     out=str(tmp_path / "a")))
    assert first["timesteps"] == 192 and set(first["test"]) >= {"error", "flops"}
    resumed = train_multiscale_ppo(MultiScalePPOConfig(**base, total_timesteps=384,
                                                       out=str(tmp_path / "a"), resume=True,
                                                       overwrite=False))
    assert resumed["timesteps"] == 384
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert 0 <= saved["test_error"] <= 1
    result = evaluate_multiscale(MultiScaleEvalConfig(
        bank=str(root / "test"), policy=[f"ppo={tmp_path / 'a' / 'best.zip'}"],
        max_glimpses=3, max_images=60, single_scale=False, out=str(tmp_path / "eval")))
    assert set(result["policies"]) == {"ppo"}
    # masked: every glimpse opened a new cell under an open parent, so each one cost more
    pixels = result["policies"]["ppo"]["pixels"]
    assert pixels[1] < pixels[2] < pixels[3] == 16 * 16 + 3 * 13 ** 2
    with pytest.raises(CheckpointError, match="no Stable-Baselines3 .zip"):
        evaluate_multiscale(MultiScaleEvalConfig(
            bank=str(root / "test"), policy=[f"x={tmp_path / 'missing.zip'}"],
            out=str(tmp_path / "eval2")))


def test_evaluations_over_seeds_combine_into_mean_and_spread(tmp_path) -> None:
    from train.extract_features import ExtractConfig, extract_features

    # the embedded default BagNet (trained, so random cells' errors vary with the seed)
    extract_features(ExtractConfig(split=["test"], scales="0.5,1", out=str(tmp_path / "ms"),
                                   progress=False))
    for seed in (0, 1, 2):
        evaluate_multiscale(MultiScaleEvalConfig(
            bank=str(tmp_path / "ms" / "test"), policy=["random"], max_glimpses=3,
            max_images=200, seed=seed, out=str(tmp_path / f"s{seed}")))
    combined = evaluate_multiscale(MultiScaleEvalConfig(
        combine=[str(tmp_path / f"s{seed}") for seed in (0, 1, 2)], out=str(tmp_path / "all")))
    random = combined["policies"]["random"]
    runs = [json.loads((tmp_path / f"s{seed}" / "results.json").read_text())
            for seed in (0, 1, 2)]
    values = [r["policies"]["random"]["error"]["3"] for r in runs]
    assert random["seeds"] == 3 and random["error_summary"][3]["values"] == values
    assert random["error"][3] == pytest.approx(np.mean(values))
    # the rows that read one BagNet do not change with the seed: no spread
    assert combined["policies"]["full-image"]["error_summary"][3]["std"] == pytest.approx(0)
    assert np.std(values) > 0 and "±" in (tmp_path / "all" / "results.md").read_text()
