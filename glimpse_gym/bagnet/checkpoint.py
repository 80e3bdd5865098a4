"""BagNet checkpoints: one ``.pt`` file that rebuilds the model and says how to feed it.

A checkpoint is a plain dict (loadable with ``weights_only=True``)::

    format        "glimpse-gym-bagnet/1"
    arch          registry name of the architecture ("bagnet-small", "bagnet33", ...)
    arch_kwargs   keyword arguments of that factory
    state_dict    the model's tensors
    model_hash    short sha256 of state_dict and bn_by_scale (feature banks record it)
    class_names   list[str], one per class index
    normalization {"mean": [...], "std": [...]} applied to images scaled to [0, 1]
    image_shape   [C, H, W] the model was trained on
    rf, stride    receptive field and total stride in pixels
    dataset       {"name": ..., "options": {...}} it was trained on
    metrics       the last evaluation (val/test errors, ...)
    config        the options of the run that trained it (pretrain-bagnet's config)
    train_state   optional: optimizer, scheduler, epoch (for --resume)
    bn_by_scale   optional: {"0.5": {name: tensor}, ...} the BatchNorm statistics of a BagNet
                  trained across scales, estimated at each scale below 1 (state_dict holds
                  those of scale 1); ``extract-features --scales`` uses them level by level
    checksum      sha256 of everything above (:func:`glimpse_gym.fileio.payload_checksum`)

Loading checks the checksum and that ``model_hash`` is the hash of the weights, so a
changed byte anywhere raises :class:`~glimpse_gym.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from glimpse_gym.bagnet.common import BagNetBase
from glimpse_gym.errors import CheckpointError, UnknownNameError
from glimpse_gym.fileio import load_payload, save_payload, state_dict_hash

FORMAT = "glimpse-gym-bagnet/1"
REQUIRED = ("arch", "arch_kwargs", "state_dict", "model_hash", "class_names", "normalization",
            "image_shape")


def build_bagnet(arch: str, **kwargs: Any) -> BagNetBase:
    """Instantiate a registered architecture (see ``ARCHITECTURES``) with its kwargs;
    ``bottleneck=D`` wraps it in a :class:`~glimpse_gym.bagnet.bottleneck.BottleneckBagNet`
    of D what-features."""
    from glimpse_gym.bagnet import ARCHITECTURES
    from glimpse_gym.bagnet.bottleneck import BottleneckBagNet

    if arch not in ARCHITECTURES:
        raise UnknownNameError(f"unknown BagNet architecture {arch!r}; valid: "
                               f"{', '.join(ARCHITECTURES)}")
    bottleneck = kwargs.pop("bottleneck", None)
    model = ARCHITECTURES[arch](**kwargs)
    return model if bottleneck is None else BottleneckBagNet(model, int(bottleneck))


def weights_hash(state: dict[str, torch.Tensor],
                 bn_by_scale: dict[str, dict[str, torch.Tensor]] | None = None) -> str:
    """A checkpoint's ``model_hash``: of ``state`` and, where there are any, the per-scale
    BatchNorm statistics (without them, :func:`~glimpse_gym.fileio.state_dict_hash`)."""
    extra = {f"bn_by_scale/{s}/{k}": v for s, stats in (bn_by_scale or {}).items()
             for k, v in stats.items()}
    return state_dict_hash({**state, **extra})


def save_checkpoint(path: str | Path, model: BagNetBase, *, arch: str,
                    arch_kwargs: dict[str, Any], class_names: list[str],
                    mean: list[float], std: list[float], image_shape: list[int],
                    dataset: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                    config: dict[str, Any] | None = None,
                    train_state: dict[str, Any] | None = None,
                    bn_by_scale: dict[str, dict[str, torch.Tensor]] | None = None
                    ) -> dict[str, Any]:
    """Write a checkpoint atomically (temporary file, then ``os.replace``); return its dict."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "state_dict": state,
        "model_hash": weights_hash(state, bn_by_scale),
        "class_names": list(class_names),
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "image_shape": [int(s) for s in image_shape],
        "rf": int(model.rf),
        "stride": int(model.stride),
        "dataset": dataset or {},
        "metrics": metrics or {},
        "config": config or {},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    if bn_by_scale:
        payload["bn_by_scale"] = bn_by_scale
    return save_payload(payload, path)


def load_checkpoint(path: str | Path, *, require_checksum: bool = True) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check it.

    Args:
        path: the ``.pt`` file.
        require_checksum: refuse a file without a checksum (``export-bagnet`` reads such
            files to write them again with one).

    Raises:
        CheckpointError: the file is missing, unreadable, damaged (checksum or weight hash),
            or not a glimpse-gym BagNet checkpoint; the message names the path.
    """
    path = Path(path).expanduser()
    payload = load_payload(path, FORMAT, "BagNet", require_checksum=require_checksum)
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {missing}")
    kinds = {"arch": str, "arch_kwargs": dict, "state_dict": dict, "class_names": list,
             "normalization": dict, "image_shape": list}
    wrong = [k for k, kind in kinds.items() if not isinstance(payload[k], kind)]
    bn = payload.get("bn_by_scale", {})
    if not isinstance(bn, dict) or not all(isinstance(v, dict) for v in bn.values()):
        wrong.append("bn_by_scale")
    if wrong:
        raise CheckpointError(f"{path} is damaged: field(s) {wrong} have the wrong type")
    stored = payload["model_hash"]
    if weights_hash(payload["state_dict"], bn) != stored:
        raise CheckpointError(f"{path} is damaged: its weights do not match the weight hash "
                              f"stored with them ({stored})")
    return payload


def load_bagnet(source: str | Path | dict[str, Any],
                device: str | torch.device = "cpu") -> tuple[BagNetBase, dict[str, Any]]:
    """Rebuild the model of a checkpoint (path or loaded dict) in eval mode on ``device``.

    Returns:
        ``(model, checkpoint)``; the checkpoint dict carries class names, normalisation, ...
    """
    ckpt = source if isinstance(source, dict) else load_checkpoint(source)
    where = source if not isinstance(source, dict) else "checkpoint"
    try:
        model = build_bagnet(ckpt["arch"], **ckpt["arch_kwargs"])
    except (TypeError, ValueError) as exc:  # UnknownNameError is a GlimpseGymError: kept
        raise CheckpointError(f"{where}: cannot build {ckpt['arch']} {ckpt['arch_kwargs']}: "
                              f"{exc}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit {ckpt['arch']} "
                              f"{ckpt['arch_kwargs']}: {exc}") from exc
    return model.to(device).eval(), ckpt
