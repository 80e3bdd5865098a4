"""BagNet training and feature-extraction throughput (images/s) on this machine.

Every figure is measured in the same run as a reference: a naive full-resolution CNN
(same-padding 3x3 convs at 60x60, global pooling), so a noisy machine shows up in both.
Inputs are random uint8 images (throughput does not depend on their content), normalised
as in training.

    python benchmarks/bagnet_throughput.py [--device auto] [--seconds 20] [--out result.json]
    python benchmarks/bagnet_throughput.py --imagenet    # adds BagNet-33 at ImageNet's size
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glimpse_gym.bagnet import bagnet9, bagnet33, bagnet_small, bagnet_tiny, preprocess
from glimpse_gym.device import resolve_device


class NaiveCNN(nn.Module):
    """Reference: four same-padding 3x3 convs at full resolution, global pool, linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for w in (32, 64, 64, 128):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            cin = w
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def _rate(step: Callable[[], None], batch: int, seconds: float, device: torch.device) -> float:
    """Images per second of ``step`` (one batch) over about ``seconds`` after a warm-up."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)


def train_rate(model: nn.Module, size: int, channels: int, batch: int, seconds: float,
               device: torch.device, per_cell: bool = True) -> float:
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        x = preprocess(images, [0.1] * channels, [0.3] * channels, device)
        out = model(x)
        if per_cell:
            logits = out.logits
            loss = F.cross_entropy(logits, labels[:, None, None].expand(-1, *logits.shape[2:]))
        else:
            loss = F.cross_entropy(out, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _rate(step, batch, seconds, device)


@torch.no_grad()
def extract_rate(model: nn.Module, size: int, channels: int, batch: int, seconds: float,
                 device: torch.device, autocast: bool = False) -> float:
    """Forward passes as ``extract-features`` runs them; with ``autocast``, in float16 on
    CUDA (bfloat16 on the CPU)."""
    model = model.to(device).eval()
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16

    def step() -> None:
        with torch.autocast(device.type, dtype=half, enabled=autocast):
            out = model(preprocess(images, [0.1] * channels, [0.3] * channels, device))
        out.features.to(torch.float16).cpu()
        out.logits.float().cpu()

    return _rate(step, batch, seconds, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--imagenet", action="store_true",
                        help="also BagNet-33 at 224x224 RGB (ImageNet's extraction), float32 "
                             "and autocast (float16 on CUDA, bfloat16 on the CPU)")
    parser.add_argument("--imagenet-batch", type=int, default=None,
                        help="batch of the --imagenet rows (default: 64 on CUDA, 8 on the CPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = args.seconds
    torch.manual_seed(0)
    rows = {
        "reference naive CNN 60x60, train": train_rate(NaiveCNN(), 60, 1, 128, s, device,
                                                       per_cell=False),
        "bagnet-small 60x60, train": train_rate(bagnet_small(), 60, 1, 128, s, device),
        "bagnet-small 60x60, extract": extract_rate(bagnet_small(), 60, 1, 512, s, device),
        "bagnet-tiny 32x32, train": train_rate(bagnet_tiny(), 32, 1, 128, s, device),
        "bagnet-tiny 32x32, extract": extract_rate(bagnet_tiny(), 32, 1, 512, s, device),
        "bagnet9 (official) 96x96 RGB, extract": extract_rate(bagnet9(), 96, 3, 32, s, device),
    }
    if args.imagenet:
        b = args.imagenet_batch or (64 if device.type == "cuda" else 8)
        half = "float16" if device.type == "cuda" else "bfloat16"
        rows["bagnet33 (official) 224x224 RGB, extract, float32"] = extract_rate(
            bagnet33(), 224, 3, b, s, device)
        rows[f"bagnet33 (official) 224x224 RGB, extract, {half}"] = extract_rate(
            bagnet33(), 224, 3, b, s, device, autocast=True)
    ref = rows["reference naive CNN 60x60, train"]
    print(f"device: {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"{'measurement':52s} {'images/s':>10s} {'x reference':>12s}")
    for name, rate in rows.items():
        print(f"{name:52s} {rate:10.0f} {rate / ref:12.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "device": str(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "images_per_s": rows,
            "ratio_to_reference": {k: v / ref for k, v in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()
