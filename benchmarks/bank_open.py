"""What opening a feature bank costs: the first open (every file hashed), later opens (a
stat of each file against the record of that check), and ``verify=True`` (hashed again).

The bank is synthetic with the shapes of the 60x60 cluttered-MNIST training bank (55,000
images, an 11x11 grid of 32-d float16 features, 10 classes, the images stored), so the bytes
are those of the real one. The reference, measured in the same run, is reading the same
files once (``read`` of every byte, what the hash cannot be faster than here).

    python benchmarks/bank_open.py --out runs/bench/bank_open.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glimpse_gym.bank import FeatureBank  # noqa: E402
from glimpse_gym.bank_checks import FORMAT, HEAD, META, META_CHECKSUM, meta_checksum  # noqa: E402
from glimpse_gym.fileio import file_sha256  # noqa: E402


def synthetic_bank(path: Path, n: int, grid: int = 11, d: int = 32, k: int = 10,
                   image: int = 60, rf: int = 20, stride: int = 4) -> Path:
    """A bank of random values with the given shapes (written block by block)."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    specs = {"features": ("features.npy", "float16", (n, d, grid, grid)),
             "logits": ("logits.npy", "float32", (n, k, grid, grid)),
             "labels": ("labels.npy", "int64", (n,)),
             "images": ("images.npy", "uint8", (n, 1, image, image))}
    for name, (f, dtype, shape) in specs.items():
        arr = open_memmap(path / f, mode="w+", dtype=dtype, shape=shape)
        for s in range(0, n, 5000):
            block = arr[s:s + 5000]
            if name == "labels":
                block[:] = rng.integers(0, k, len(block))
            else:
                block[:] = rng.integers(0, 100, block.shape).astype(dtype)
        arr.flush()
        del arr
    np.savez(path / HEAD, weight=np.zeros((k, d), np.float32), bias=np.zeros(k, np.float32))
    files = [spec[0] for spec in specs.values()] + [HEAD]
    meta = {"format": FORMAT,
            "dataset": {"name": "synthetic", "split": "train", "num_images": n, "options": {},
                        "class_names": [str(c) for c in range(k)]},
            "model": {"arch": "none", "arch_kwargs": {}, "hash": "0" * 16, "rf": rf,
                      "stride": stride, "feature_dim": d, "num_classes": k},
            "grid": [grid, grid], "image_shape": [1, image, image],
            "normalization": {"mean": [0.0], "std": [1.0]},
            "arrays": {name: {"file": f, "dtype": dt, "shape": list(shape)}
                       for name, (f, dt, shape) in specs.items()},
            "checksums": {f: file_sha256(path / f) for f in files},
            "sizes": {f: (path / f).stat().st_size for f in files}, "stats": {}}
    meta[META_CHECKSUM] = meta_checksum(meta)
    (path / META).write_text(json.dumps(meta))
    return path


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _read_all(path: Path) -> None:
    for f in sorted(path.iterdir()):
        with open(f, "rb") as fh:
            while fh.read(1 << 22):
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=55_000, help="images in the bank")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (medians)")
    parser.add_argument("--out", default="runs/bench/bank_open.json", help="JSON results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="glimpse-bank-open-") as tmp:
        os.environ["GLIMPSE_GYM_CACHE"] = str(Path(tmp) / "cache")
        bank = synthetic_bank(Path(tmp) / "bank", args.images)
        size = sum(f.stat().st_size for f in bank.iterdir())
        rows: dict[str, list[float]] = {"read every byte (reference)": [],
                                        "first open (hash every file)": [],
                                        "later open (stat against the record)": [],
                                        "open with verify=True": []}
        for r in range(args.rounds):
            os.environ["GLIMPSE_GYM_CACHE"] = str(Path(tmp) / f"cache{r}")  # no record yet
            rows["read every byte (reference)"].append(_timed(lambda: _read_all(bank)))
            rows["first open (hash every file)"].append(_timed(lambda: FeatureBank.load(bank)))
            rows["later open (stat against the record)"].append(
                _timed(lambda: FeatureBank.load(bank)))
            rows["open with verify=True"].append(
                _timed(lambda: FeatureBank.load(bank, verify=True)))
    medians = {k: float(np.median(v)) for k, v in rows.items()}
    ref = medians["read every byte (reference)"]
    print(f"bank of {args.images} images, {size / 1e6:.0f} MB ({args.rounds} rounds, medians)")
    for name, sec in medians.items():
        print(f"{name:40s} {sec * 1000:9.1f} ms  {size / sec / 1e6:8.0f} MB/s  "
              f"{sec / ref:6.2f}x the reference")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": args.images, "bytes": size, "seconds": rows,
                               "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
