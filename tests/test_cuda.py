"""On a CUDA device: the vector envs' tensor paths equal SyncVectorEnv, and the agents train.

Skipped where torch sees no CUDA device; ``make gpu-check`` runs this file (and the env
benchmarks on ``cuda``) on a machine with one.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from glimpse_gym.envs import OBSERVATION_MODES, GlimpseVectorEnv, MultiScaleEnv
from tests.envs.vector_check import assert_same_as_sync

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (make gpu-check runs these on one)")
MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]


@pytest.mark.parametrize("observation", OBSERVATION_MODES)
@pytest.mark.parametrize("autoreset", MODES)
def test_glimpse_vector_env_on_cuda_equals_sync(observation, autoreset) -> None:
    n, t = 6, 3
    sync = SyncVectorEnv([lambda: gym.make("Glimpse-v0", observation=observation, glimpses=t)
                          for _ in range(n)], autoreset_mode=autoreset)
    native = GlimpseVectorEnv(n, observation=observation, glimpses=t, device="cuda",
                              autoreset_mode=autoreset)
    assert native._host is None and not native._cov.compiled  # the tensor path
    assert_same_as_sync(sync, native, autoreset)


@pytest.mark.parametrize("observation", ["partial", "glimpses"])
def test_multiscale_vector_env_on_cuda_equals_the_cpu(multiscale_banks, observation) -> None:
    bank = multiscale_banks[1]["test"]
    cpu = gym.make_vec("MultiScale-v0", num_envs=5, bank=str(bank.path), glimpses=3,
                       observation=observation)
    gpu = gym.make_vec("MultiScale-v0", num_envs=5, bank=str(bank.path), glimpses=3,
                       observation=observation, device="cuda")
    assert not gpu.compiled
    rng = np.random.default_rng(0)
    a, b = cpu.reset(seed=1), gpu.reset(seed=1)
    for _ in range(9):
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=key)
        for key in ("prediction", "action_mask", "pixels", "flops"):
            np.testing.assert_array_equal(a[-1][key], b[-1][key], err_msg=key)
        actions = rng.integers(0, cpu.single_action_space.n, 5)
        a, b = cpu.step(actions), gpu.step(actions)
    single = MultiScaleEnv(bank, glimpses=3)
    assert single.num_actions == cpu.single_action_space.n


def test_agents_train_on_cuda(multiscale_banks, tmp_path) -> None:
    from train.ppo import PPOConfig, train_maskable_ppo
    from train.saccader import SaccaderConfig, train_saccader
    from train.tnet import TNetConfig, train_tnet

    ppo = train_maskable_ppo(PPOConfig(num_envs=32, total_timesteps=768, n_steps=12,
                                       batch_size=128, eval_freq=768, eval_images=64,
                                       out=str(tmp_path / "ppo"), device="cuda",
                                       progress=False))
    assert 0 <= ppo["test"]["accuracy"] <= 1
    saccader = train_saccader(SaccaderConfig(location_epochs=1, policy_epochs=1,
                                             out=str(tmp_path / "saccader"), device="cuda",
                                             progress=False))
    assert saccader["test_error"]
    root, _ = multiscale_banks
    tnet = train_tnet(TNetConfig(banks=str(root), locations="3,2", epochs=1, device="cuda",
                                 out=str(tmp_path / "tnet"), progress=False))
    assert 0 <= tnet["test_error"] <= 1


def test_a_compact_bank_written_on_cuda_matches_the_cpu(tmp_path) -> None:
    """int8 features with their scales, no logits, channels-last, in parts, extracted on
    CUDA: the cpu's bank to within an int8 step (convolutions differ in their last bits)."""
    from glimpse_gym.bagnet import load_bagnet
    from glimpse_gym.bank_write import write_bank
    from glimpse_gym.datasets import make_dataset
    from glimpse_gym.pretrained import default_checkpoint

    data = make_dataset("digits", "val")
    kw = dict(shard_images=50, feature_dtype="int8", store_logits=False, channels_last=True,
              progress=False)
    banks = []
    for device in ("cpu", "cuda"):
        model, ckpt = load_bagnet(default_checkpoint())
        banks.append(write_bank(model, data, tmp_path / device, checkpoint=ckpt,
                                device=device, **kw))
    cpu, gpu = banks
    np.testing.assert_allclose(gpu.features.scale, cpu.features.scale, rtol=1e-3)
    diff = np.abs(np.asarray(gpu.features.raw, np.int16) - np.asarray(cpu.features.raw, np.int16))
    assert diff.max() <= 1
    env = GlimpseVectorEnv(4, bank=str(gpu.path), observation="partial", glimpses=3,
                           device="cuda")
    env.reset(seed=0)
    env.step(np.arange(4))
