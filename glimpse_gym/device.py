"""``--device auto|cpu|cuda|cuda:N`` resolved to a ``torch.device`` with a clear error."""

from __future__ import annotations

import torch

from glimpse_gym.errors import UsageError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; other strings must name a usable device.

    Raises:
        UsageError: the string is not a device, or names CUDA on a machine without it.
    """
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {spec!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} asked for CUDA, but torch sees no CUDA device here; "
                         "use --device cpu or --device auto")
    count = torch.cuda.device_count()
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise UsageError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device
