"""The standard tasks: a dataset, its options, the BagNet the package ships for it, and an id.

Each task's id (``gym.make("Glimpse-ClutteredMNIST-v0", root=...)``) is the task's dataset
seen through its shipped BagNet: the first make of a split on a machine writes that split's
feature bank into the user cache (with a progress bar), later ones open it at once and no
longer need ``root``. An id is registered only when its weights are in the package.

| task | id | images |
|---|---|---|
| ``cluttered-mnist`` | ``Glimpse-ClutteredMNIST-v0`` | MNIST, 60x60, 4 pieces of 8x8 clutter |
| ``cluttered-mnist-100`` | ``Glimpse-ClutteredMNIST100-v0`` | MNIST, 100x100, 8 pieces |
| ``cluttered-fashion`` | ``Glimpse-ClutteredFashion-v0`` | Fashion-MNIST, 60x60, 4 pieces |

A task with a shipped BagNet trained across scales also has a ``MultiScale-`` id
(``MultiScale-ClutteredMNIST-v0``, ``MultiScale-ClutteredMNIST100-v0``): ``MultiScale-v0`` on
the task's multi-scale bank of two levels (its ``scales``, 0.5 and 1): the half-size image
through the BagNet across scales and the full-size image through the task's full-size
BagNet, written into the user cache by the first make of a split in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimpse_gym.pretrained import WEIGHTS_DIR


@dataclass(frozen=True)
class Task:
    """One standard task."""

    name: str
    """Name, also accepted as ``checkpoint=`` (the shipped BagNet)."""
    env_id: str
    """The Gymnasium id."""
    dataset: str
    """Dataset registry name."""
    data_options: dict[str, Any] = field(default_factory=dict)
    """Options of the dataset beyond its defaults."""
    weights: str = ""
    """File of the shipped BagNet under ``glimpse_gym/weights``."""
    summary: str = ""
    """One line for listings."""
    glimpses: int = 6
    """T of the task's published table: the agents are trained and occluded with T glimpses
    (8 on 100x100, as RAM's larger task)."""
    multiscale_weights: str = ""
    """File of the shipped BagNet trained across scales (``pretrain-bagnet --scales``): the
    levels of the ``MultiScale-`` id below the full size (the full size: ``weights``)."""
    scales: tuple[float, ...] = ()
    """The levels of the task's ``MultiScale-`` id."""

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / self.weights

    @property
    def shipped(self) -> bool:
        """Whether the package holds this task's BagNet (else its id is not registered)."""
        return self.weights_path.is_file()

    @property
    def multiscale_id(self) -> str:
        """The id of the task across scales."""
        return self.env_id.replace("Glimpse-", "MultiScale-", 1)

    @property
    def multiscale_shipped(self) -> bool:
        """Whether the package holds the task's BagNet across scales (and its full-size one,
        which reads the full-size level)."""
        return bool(self.multiscale_weights) and self.shipped and \
            (WEIGHTS_DIR / self.multiscale_weights).is_file()

    def env_kwargs(self) -> dict[str, Any]:
        """The default arguments of the task's id."""
        return {"dataset": self.dataset, "data_options": dict(self.data_options),
                "checkpoint": self.name}


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cluttered-mnist", "Glimpse-ClutteredMNIST-v0", "cluttered-mnist", {},
         "cluttered_mnist60_bagnet.pt", "MNIST on 60x60 with 4 pieces of 8x8 clutter (RAM)",
         multiscale_weights="cluttered_mnist60_ms_bagnet.pt", scales=(0.5, 1.0)),
    Task("cluttered-mnist-100", "Glimpse-ClutteredMNIST100-v0", "cluttered-mnist",
         {"canvas_size": 100, "pieces": 8}, "cluttered_mnist100_bagnet.pt",
         "MNIST on 100x100 with 8 pieces of 8x8 clutter (RAM's larger task)", glimpses=8,
         multiscale_weights="cluttered_mnist100_ms_bagnet.pt", scales=(0.5, 1.0)),
    Task("cluttered-fashion", "Glimpse-ClutteredFashion-v0", "cluttered-fashion-mnist", {},
         "cluttered_fashion60_bagnet.pt", "Fashion-MNIST on 60x60 with 4 pieces of 8x8 clutter"),
)}


def shipped_tasks() -> list[Task]:
    """The tasks whose BagNet is in the package."""
    return [t for t in TASKS.values() if t.shipped]
