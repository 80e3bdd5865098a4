"""The fast forms of the environment's rules against the rules themselves
(:mod:`glimpse_gym.rules`): the vector env's compiled and tensor paths, the compiled and
tensor episode schedule, and the compiled and tensor coverage. Change a rule in
``glimpse_gym/rules.py`` and these tests fail until the fast forms follow (the last test
shows it for the readout)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

from glimpse_gym import rules
from glimpse_gym.envs import GlimpseVectorEnv, episodes
from glimpse_gym.envs.coverage import CoverageTable
from glimpse_gym.envs.toy import random_source

PATHS = ["compiled", "tensor", "single"]


def _play(path: str, observation: str, seed: int = 5, n: int = 6, t: int = 4,
          episodes_played: int = 3) -> list[dict]:
    """Play random episodes (revisits included) on a random source through one form of the
    env; return what it reported at every step."""
    source = random_source()
    rng = np.random.default_rng(seed)
    steps = []
    if path == "single":
        envs = [gym.make("Glimpse-v0", bank=source, glimpses=t, observation=observation)
                for _ in range(n)]
    else:
        vec = GlimpseVectorEnv(n, source, glimpses=t, observation=observation,
                               array_type="torch")
        if path == "tensor":  # the CUDA path, forced on the CPU
            vec._host, vec._cov.compiled = None, False
    for e in range(episodes_played):
        actions = rng.integers(0, 6, (t, n))  # few cells: revisits are common
        if path == "single":
            infos = [env.reset(seed=seed + i if e == 0 else None)[1] for i, env in
                     enumerate(envs)]
            index = [info["index"] for info in infos]
            for a in actions:
                out = [env.step(int(c)) for env, c in zip(envs, a, strict=True)]
                steps.append({"index": index, "cells": a,
                              "prediction": [o[4]["prediction"] for o in out],
                              "reward": [o[1] for o in out],
                              "visited": [o[0]["visited"] for o in out],
                              "coverage": [o[4].get("coverage") for o in out]})
        else:
            _, info = vec.reset(seed=seed if e == 0 else None)
            index = info["index"].tolist()
            for a in actions:
                obs, reward, _, _, info = vec.step(torch.from_numpy(a))
                steps.append({"index": index, "cells": a,
                              "prediction": info["prediction"].tolist(),
                              "reward": reward.tolist(), "visited": obs["visited"].numpy(),
                              "coverage": info["coverage"].tolist() if "coverage" in info
                              else [None] * n})
    return steps


def _check_against_rules(steps: list[dict], seed: int = 5, n: int = 6, t: int = 4) -> None:
    source = random_source()
    m = source.num_images
    keys = [rules.draw_key(seeding.np_random(seed + i)[0]) for i in range(n)]
    logits = source.logits.reshape(m, source.num_classes, -1)
    for s, step in enumerate(steps):
        episode, glimpse = divmod(s, t)
        if glimpse == 0:
            games = [rules.Episode(logits[rules.episode_image(keys[i], episode, m)],
                                   int(source.labels[rules.episode_image(keys[i], episode, m)]),
                                   t) for i in range(n)]
        for i, game in enumerate(games):
            assert step["index"][i] == rules.episode_image(keys[i], episode, m)
            game.glimpse(int(step["cells"][i]))
            assert step["prediction"][i] == game.prediction, (s, i)
            assert step["reward"][i] == game.reward(), (s, i)
            np.testing.assert_array_equal(step["visited"][i], game.visited)
            if game.done:
                assert step["coverage"][i] == pytest.approx(rules.coverage(
                    game.cells, source.grid, source.rf, source.stride,
                    source.image_shape[1:]), abs=1e-12)


@pytest.mark.parametrize("observation", ["full", "partial", "glimpses", "index"])
@pytest.mark.parametrize("path", PATHS)
def test_env_forms_follow_the_rules(path: str, observation: str) -> None:
    """Image schedule, prediction after every glimpse, reward, visited cells and coverage of
    the vector env (compiled and tensor paths) and the single env equal the rules'."""
    _check_against_rules(_play(path, observation))


def test_changing_a_rule_fails_the_fast_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the readout changed (argmin instead of argmax), the single env follows at once
    (it calls the rule) and the vector env's fast forms no longer pass the check above."""
    monkeypatch.setattr(rules, "readout", lambda logit_sum: int(np.argmin(logit_sum)))
    _check_against_rules(_play("single", "full"))
    for path in ("compiled", "tensor"):
        with pytest.raises(AssertionError):
            _check_against_rules(_play(path, "full"))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(("grid", "rf", "stride", "image"), [
    ((11, 11), 19, 4, (60, 60)),  # the cluttered-MNIST BagNet: 484 rectangles, 6 sizes
    ((10, 10), 13, 2, (32, 32)),  # digits
    ((3, 5), 7, 3, (13, 17)),  # fields past the image edge, a non-square image
])
def test_coverage_forms_follow_the_rule(grid, rf, stride, image, compiled: bool) -> None:
    """The coverage table's popcount area (compiled loop: the CPU path; tensor popcount: the
    CUDA path) equals :func:`rules.coverage` for revisits, single cells, every cell at once,
    and random sequences."""
    h, w = grid
    table = CoverageTable(grid, rf, stride, image, torch.device("cpu"))
    table.compiled = compiled
    assert bool((table.masks >= 0).all())  # the sign bit is never used
    rng = np.random.default_rng(0)
    cells = [rng.integers(0, h * w, t) for t in (1, 2, 6, 12, 40) for _ in range(8)]
    cells += [np.arange(h * w), np.full(5, h * w - 1)]
    for seq in cells:
        got = float(table.union(torch.as_tensor(seq)[None, :])[0])
        assert got == pytest.approx(rules.coverage(seq, grid, rf, stride, image), abs=1e-12)


def test_episode_schedule_forms_follow_the_rule() -> None:
    """The compiled uint64 loop (the CPU path) and int64 tensor arithmetic (the CUDA path)
    give :func:`rules.episode_image` for keys across the whole 63-bit range and large
    episode counts."""
    rng = np.random.default_rng(3)
    keys = torch.from_numpy(np.concatenate([rng.integers(0, 1 << 63, 500), [0, (1 << 63) - 1]]))
    for episode, num_images in ((0, 7), (5, 55_000), (123_456_789, 60_000), (2**40, 1)):
        via_compiled = episodes.episode_images(keys, episode, num_images)
        via_tensor = episodes._episode_images_tensor(keys, torch.tensor(episode), num_images)
        expected = [rules.episode_image(k, episode, num_images) for k in keys.tolist()]
        assert via_compiled.dtype == torch.int64
        assert via_compiled.tolist() == expected and via_tensor.tolist() == expected


def test_masking_constant_hides_visited_cells() -> None:
    """:func:`rules.mask_visited` leaves unvisited logits as they are and puts every visited
    cell below every unvisited one, for logits of any size a network gives."""
    logits = torch.randn(64, 121) * 100
    visited = torch.rand(64, 121) < 0.9
    visited[:, 0] = False
    masked = rules.mask_visited(logits, visited)
    assert torch.equal(masked[~visited], logits[~visited])
    assert not bool(visited.gather(1, masked.argmax(dim=1, keepdim=True)).any())
    assert float(torch.softmax(masked, dim=1)[visited].max()) == 0.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_compiled_channels_last_equals_the_transpose(dtype) -> None:
    """The compiled grid transpose (bank grids [B, D, H, W] -> [B, H*W, D] float32) gives
    exactly numpy's transpose and cast, special float16 values included."""
    from glimpse_gym.envs.kernels import channels_last

    rng = np.random.default_rng(0)
    grids = (rng.standard_normal((5, 7, 3, 4)) * 100).astype(dtype)
    grids.flat[:4] = [np.inf, -np.inf, 0.0, -0.0]
    if dtype == np.float16:
        grids.flat[4] = np.float16(6e-8)  # a subnormal
    expected = grids.reshape(5, 7, 12).transpose(0, 2, 1).astype(np.float32)
    got = channels_last(grids)
    assert got.dtype == np.float32 and got.shape == (5, 12, 7)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))  # -0.0 too
