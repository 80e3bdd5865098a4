"""Evaluation: glimpse policies on every image of a split exactly once, at T = 1..Tmax.

The one place where policies are measured; ``glimpse evaluate``, ``glimpse demo``,
``glimpse bank-info --glimpses`` and the trainers' end-of-training numbers all call it.

- :func:`run_policy` drives a :class:`~agents.policies.GlimpsePolicy` through the native
  vector env for Tmax glimpses on every image once and keeps, per image, the env's prediction
  after each glimpse and whether it was right, the cells, and the covered fraction of the
  image after each glimpse (a :class:`PolicyRun`);
- :func:`summarise` turns a run into accuracy, error, coverage and location diversity at
  each T;
- :func:`occlusion_test` blanks the image under a policy's first T glimpses (the cells'
  receptive fields) and re-classifies with the full-image BagNet, against blanking as many
  random cells' fields;
- :func:`compare` does all of that for several policies and adds the full-image row;
  :func:`baseline_table` is its short form for the non-learned baselines at one T;
- :func:`evaluate_on_split` is the trainers' quick form (accuracy and coverage at T), for a
  policy object or a plain function ``policy(obs, masks) -> actions``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents.policies import (
    FULL_IMAGE,
    GlimpsePolicy,
    OrderedLogitsPolicy,
    RandomPolicy,
    SB3Policy,
    TrueLabelPolicy,
)
from glimpse_gym.bagnet.common import BagNetBase, image_logits
from glimpse_gym.bagnet.inference import preprocess
from glimpse_gym.envs import GlimpseSource, GlimpseVectorEnv, load_source
from glimpse_gym.readout import random_cells


@dataclass
class PolicyRun:
    """Per-image record of one policy on one split.

    Attributes:
        correct: ``[N, Tmax] bool``: the env's prediction after t+1 glimpses was right.
        cells: ``[N, Tmax] long``: the glimpsed cells.
        coverage: ``[N, Tmax] float``: covered fraction of the image after t+1 glimpses.
        labels: ``[N]``.
        predictions: ``[N, Tmax] long``: the env's predicted class after t+1 glimpses.
    """

    correct: torch.Tensor
    cells: torch.Tensor
    coverage: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor


def run_policy(policy: GlimpsePolicy, bank: str | Path | None = None, *, max_glimpses: int = 12,
               batch: int = 1024, max_images: int | None = None,
               **env_kwargs: Any) -> PolicyRun:
    """Run ``policy`` for ``max_glimpses`` on each image of the bank (or default split) once."""
    source_kwargs = {k: v for k, v in env_kwargs.items()
                     if k in ("dataset", "split", "checkpoint", "seed", "expect")}
    total = load_source(bank, **source_kwargs).num_images  # memory-mapped: cheap to count
    n = total if max_images is None else min(max_images, total)
    size = min(batch, n)
    envs = GlimpseVectorEnv(size, bank, glimpses=max_glimpses, observation=policy.observation,
                            head=policy.head, array_type="torch", copy=False, **env_kwargs)
    correct, cells, coverage, labels, predictions = [], [], [], [], []
    for start in range(0, n, size):
        images = torch.arange(start, start + size) % n
        obs, info = envs.reset(options={"indices": images.numpy()})
        policy.begin(envs.source, images)
        step_correct, step_predictions = [], []
        for _ in range(max_glimpses):
            mask = obs["visited"] == 0
            actions = policy.act(obs, mask)
            obs, _, _, _, info = envs.step(actions)
            step_correct.append(info["correct"].clone())
            step_predictions.append(info["prediction"].clone())
        valid = min(size, n - start)
        batch_cells = info["cells"][:valid].clone()
        correct.append(torch.stack(step_correct, 1)[:valid])
        predictions.append(torch.stack(step_predictions, 1)[:valid])
        cells.append(batch_cells)
        coverage.append(torch.stack([envs.coverage_of(batch_cells[:, :t + 1])
                                     for t in range(max_glimpses)], 1))
        labels.append(info["label"][:valid].clone())
    return PolicyRun(torch.cat(correct).cpu(), torch.cat(cells).cpu(),
                     torch.cat(coverage).cpu(), torch.cat(labels).cpu(),
                     torch.cat(predictions).cpu().long())


def location_diversity(cells: torch.Tensor, num_cells: int) -> float:
    """Entropy of the histogram of glimpsed cells over all images, divided by its maximum
    ``log(H*W)``: 0 when every image is glimpsed at the same cells, 1 when uniform."""
    counts = torch.bincount(cells.reshape(-1), minlength=num_cells).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return entropy / float(np.log(num_cells))


def summarise(run: PolicyRun, num_cells: int) -> dict[str, dict[int, float]]:
    """Accuracy, error, mean coverage and location diversity at each T = 1..Tmax."""
    tmax = run.correct.shape[1]
    out: dict[str, dict[int, float]] = {"accuracy": {}, "error": {}, "coverage": {},
                                        "diversity": {}}
    for t in range(1, tmax + 1):
        acc = run.correct[:, t - 1].float().mean().item()
        out["accuracy"][t] = acc
        out["error"][t] = 1 - acc
        out["coverage"][t] = run.coverage[:, t - 1].mean().item()
        out["diversity"][t] = location_diversity(run.cells[:, :t], num_cells)
    return out


def occlude(images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank (set to 0) the pixels inside ``boxes [N, T, 4]`` (top, left, bottom, right,
    clipped to the image) of ``images [N, C, H, W]``. Returns the occluded copy and the
    ``[N, H, W] bool`` mask of what was blanked."""
    n, _, h, w = images.shape
    top, left, bottom, right = boxes.unbind(-1)  # [N, T] each
    ys = torch.arange(h)[None, None, :]
    xs = torch.arange(w)[None, None, :]
    in_rows = (ys >= top[..., None]) & (ys < bottom[..., None])  # [N, T, H]
    in_cols = (xs >= left[..., None]) & (xs < right[..., None])  # [N, T, W]
    mask = (in_rows[:, :, :, None] & in_cols[:, :, None, :]).any(dim=1)  # [N, H, W]
    return images.masked_fill(mask[:, None], 0), mask


@torch.no_grad()
def occlusion_test(model: BagNetBase, mean: Any, std: Any, images: np.ndarray,
                   labels: torch.Tensor, cells: torch.Tensor, cell_boxes: np.ndarray,
                   glimpses: int, seed: int = 0, batch: int = 500,
                   device: str | torch.device = "cpu") -> dict[str, float]:
    """Full-image BagNet accuracy on the clean images, with the regions under the policy's
    first ``glimpses`` cells blanked, and with as many random cells' regions blanked."""
    model.eval()
    boxes = torch.as_tensor(cell_boxes, dtype=torch.long)
    n = len(labels)
    random = random_cells(n, len(cell_boxes), glimpses, torch.Generator().manual_seed(seed))
    hits = {"clean": 0, "policy": 0, "random": 0}
    for s in range(0, n, batch):
        imgs = torch.from_numpy(np.array(images[s:s + batch]))
        y = labels[s:s + batch].to(device)
        variants = {"clean": imgs,
                    "policy": occlude(imgs, boxes[cells[s:s + batch, :glimpses]])[0],
                    "random": occlude(imgs, boxes[random[s:s + batch]])[0]}
        for name, x in variants.items():
            out = model(preprocess(x, mean, std, device))
            hits[name] += int((image_logits(out.logits).argmax(dim=1) == y).sum())
    acc = {k: v / n for k, v in hits.items()}
    return {"accuracy_clean": acc["clean"], "accuracy_policy_occluded": acc["policy"],
            "accuracy_random_occluded": acc["random"],
            "drop_policy": acc["clean"] - acc["policy"],
            "drop_random": acc["clean"] - acc["random"], "glimpses": glimpses}


@dataclass
class Occlusion:
    """What the occlusion test needs: the full-image BagNet and its input normalisation."""

    model: BagNetBase
    mean: Any
    std: Any


def full_image_accuracy(source: GlimpseSource, n: int | None = None) -> float:
    """Accuracy of the full-image BagNet on the first ``n`` images: the readout with every
    cell glimpsed (the summed logits of all cells, float64, first argmax)."""
    n = source.num_images if n is None else n
    correct = 0
    for start in range(0, n, 1024):  # in blocks: a large bank is read, never held whole
        stop = min(n, start + 1024)
        logits = torch.from_numpy(np.asarray(source.logits[start:stop], dtype=np.float64))
        labels = torch.from_numpy(np.array(source.labels[start:stop]))
        correct += int((logits.sum(dim=(2, 3)).argmax(dim=1) == labels).sum())
    return correct / max(n, 1)


def compare(policies: Sequence[GlimpsePolicy], source: GlimpseSource, *,
            max_glimpses: int = 12, batch: int = 1024, max_images: int | None = None,
            device: str | torch.device = "cpu", occlusion: Occlusion | None = None,
            occlusion_glimpses: int = 6, seed: int = 0,
            on_run: Callable[[GlimpsePolicy, PolicyRun, dict[str, Any]], None] | None = None,
            progress: bool = False) -> dict[str, dict[str, Any]]:
    """Every policy on the first ``max_images`` images of ``source`` (all by default).

    Returns:
        By policy name: :func:`summarise`'s ``accuracy``, ``error``, ``coverage`` and
        ``diversity`` by T, ``head`` (``own`` or ``bagnet``), ``observation``, and with
        ``occlusion`` the :func:`occlusion_test` at ``occlusion_glimpses``; last, the
        :data:`~agents.policies.FULL_IMAGE` row (accuracy, error and coverage 1 at every T).
        ``on_run(policy, run, row)`` is called after each policy (e.g. to draw pictures);
        ``progress`` shows a bar over the policies.
    """
    n = source.num_images if max_images is None else min(max_images, source.num_images)
    table: dict[str, dict[str, Any]] = {}
    for policy in tqdm(policies, desc="policies", disable=not progress, leave=False):
        run = run_policy(policy, source, max_glimpses=max_glimpses, batch=batch,
                         max_images=n, device=str(device))
        row: dict[str, Any] = summarise(run, source.grid[0] * source.grid[1])
        row["head"] = "own" if policy.head is not None else "bagnet"
        row["observation"] = policy.observation
        if occlusion is not None and source.images is not None:
            row["occlusion"] = occlusion_test(
                occlusion.model, occlusion.mean, occlusion.std, source.images[:n], run.labels,
                run.cells, source.cell_boxes(), occlusion_glimpses, seed=seed, device=device)
        if on_run is not None:
            on_run(policy, run, row)
        table[policy.name] = row
    full = full_image_accuracy(source, n)
    ts = range(1, max_glimpses + 1)
    table[FULL_IMAGE] = {"accuracy": dict.fromkeys(ts, full), "error": dict.fromkeys(ts, 1 - full),
                         "coverage": dict.fromkeys(ts, 1.0), "head": "bagnet",
                         "observation": "image"}
    return table


BASELINES = ("random", "ordered-logits", "true-label")
"""The non-learned policies of :func:`baseline_table`: random cells, ordered logits, and the
cells ranked by the true label's logit (an oracle: a bound no label-blind ranking of cells
by this classifier's logits reaches)."""


def baseline_table(source: GlimpseSource, glimpses: int, *, seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy at T = ``glimpses`` of the full image and of :data:`BASELINES`, on every
    image of ``source`` (the same numbers ``glimpse evaluate`` reports for them)."""
    t = min(glimpses, source.grid[0] * source.grid[1])
    policies = [RandomPolicy(seed), OrderedLogitsPolicy(), TrueLabelPolicy()]
    table = compare(policies, source, max_glimpses=t, device=device)
    return {name: row["accuracy"][t] for name, row in table.items()}


# policy(observations, action_masks) -> actions [N]
PolicyFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


class _FunctionPolicy(GlimpsePolicy):
    """A :data:`PolicyFn` behind the shared interface (numpy in, numpy out)."""

    name = "function"

    def __init__(self, fn: PolicyFn) -> None:
        self.fn = fn

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        actions = self.fn({k: v.cpu().numpy() for k, v in obs.items()}, mask.cpu().numpy())
        return torch.as_tensor(np.asarray(actions).reshape(len(mask)), dtype=torch.long,
                               device=mask.device)


def evaluate_on_split(policy: PolicyFn | GlimpsePolicy, bank: str | Path | None = None, *,
                      glimpses: int = 6, observation: str = "full", batch: int = 1024,
                      max_images: int | None = None, **env_kwargs: Any) -> dict[str, float]:
    """Run ``policy`` for T glimpses on each image of the bank (or default split) once.

    Returns:
        ``accuracy`` (fraction of images classified right after T glimpses), ``coverage``
        (mean fraction of pixels inside the glimpses' receptive fields), ``num_images``.
    """
    if not isinstance(policy, GlimpsePolicy):
        policy = _FunctionPolicy(policy)
    policy.observation = observation
    if "head" in env_kwargs:  # the classifier the env reads the glimpses with
        policy.head = env_kwargs.pop("head")
    run = run_policy(policy, bank, max_glimpses=glimpses, batch=batch, max_images=max_images,
                     **env_kwargs)
    return {"accuracy": run.correct[:, -1].float().mean().item(),
            "coverage": run.coverage[:, -1].mean().item(), "num_images": len(run.labels)}


def sb3_policy(model: Any, deterministic: bool = True) -> GlimpsePolicy:
    """A (Maskable)PPO model as a policy (deterministic only, as evaluation needs)."""
    if not deterministic:
        raise ValueError("sb3_policy evaluates deterministic policies only")
    return SB3Policy(model)


__all__ = ["BASELINES", "Occlusion", "PolicyFn", "PolicyRun", "baseline_table", "compare",
           "evaluate_on_split", "full_image_accuracy", "location_diversity", "occlude",
           "occlusion_test", "run_policy", "sb3_policy", "summarise"]
