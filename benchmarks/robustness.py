"""Fuzz and damage trials: does every bad input, damaged file and crafted file get the
documented answer?

Trials (each counted as behaving as documented or not):

- invalid actions to ``Glimpse-v0`` and the native vector env: :class:`InvalidAction`, and the
  env then continues exactly like a twin that never saw the bad action;
- bad ``reset`` seeds and options: a ``ValueError``, and the env continues like its twin;
- single-bit flips at random places of every file of a feature bank, of a BagNet, Saccader
  and REINFORCE checkpoint, and of a ``glimpse train ppo`` zip: the load raises the project's
  error naming the file, or returns exactly the original contents (a flip in bytes nobody
  reads); anything else (other values loaded silently, another exception) is a failure;
- edits of ``meta.json`` fields: :class:`BankError`, from the checksum; and with the checksum
  recomputed to match, from the field checks (every field that others determine);
- crafted files (a ``.pt`` whose unpickling runs a shell command, and SB3 zips whose pickled
  entries or weights do) through every loader: no command runs, the project's error is
  raised.

Writes a JSON summary (``--out``) and prints the table docs/reliability.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crafted import crafted_pt, make_runs, pt_loaders, zip_loaders  # noqa: E402

from glimpse_gym.errors import BankError, GlimpseGymError, InvalidAction  # noqa: E402


class Tally:
    """Counts of trials per kind and how many behaved as documented."""

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}
        self.failures: list[str] = []

    def add(self, kind: str, ok: bool, detail: str = "", refused: bool = True) -> None:
        """One trial; ``refused``: it raised the documented error (else it loaded the
        original contents unchanged, for a flip in bytes that nothing reads)."""
        row = self.rows.setdefault(kind, [0, 0, 0])
        row[0] += 1
        row[1] += bool(ok)
        row[2] += bool(ok and refused)
        if not ok and len(self.failures) < 50:
            self.failures.append(f"{kind}: {detail}")


# ---------------------------------------------------------------- invalid actions, resets
BAD_ACTIONS = [-1, 100, 10**9, 2.0, 3.5, float("nan"), True, None, "3", [1], (2,),
               np.array([1, 2]), np.float32(1), np.array(1.0), {"cell": 1}, b"1", 1j]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def actions_and_resets(tally: Tally, rng: np.random.Generator, trials: int) -> None:
    import gymnasium as gym

    import glimpse_gym  # noqa: F401

    env, twin = (gym.make("Glimpse-v0", glimpses=4) for _ in range(2))
    for trial in range(trials):
        env.reset(seed=trial)
        twin.reset(seed=trial)
        for _ in range(int(rng.integers(0, 3))):
            cell = int(rng.integers(100))
            env.step(cell)
            twin.step(cell)
        bad = BAD_ACTIONS[trial % len(BAD_ACTIONS)]
        try:
            env.step(bad)
            ok, detail = False, f"single env took {bad!r}"
        except InvalidAction:
            cell = int(rng.integers(100))
            ok, detail = _same(env.step(cell), twin.step(cell)), f"state changed by {bad!r}"
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"{bad!r}: {type(exc).__name__}: {exc}"
        tally.add("invalid action, single env", ok, detail)

    n = 8
    envs, twins = (gym.make_vec("Glimpse-v0", num_envs=n, glimpses=4) for _ in range(2))
    bad_vectors = [np.full(n, -1), np.full(n, 100), np.zeros(n, float), np.zeros(n, bool),
                   np.zeros(n + 1, int), [[1, 2]] * (n - 1) + [[3]], "0" * n, None,
                   np.zeros((n, 1), int), [0.5] * n]
    for trial in range(trials):
        envs.reset(seed=trial)
        twins.reset(seed=trial)
        bad = bad_vectors[trial % len(bad_vectors)]
        try:
            envs.step(bad)
            ok, detail = False, f"vector env took {bad!r}"
        except InvalidAction:
            cells = rng.integers(0, 100, n)
            ok, detail = _same(envs.step(cells), twins.step(cells)), "state changed"
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        tally.add("invalid action, vector env", ok, detail)

    bad_resets = [{"seed": -1}, {"seed": 1.5}, {"seed": "0"}, {"seed": [0, 1]},
                  {"options": {"indices": np.arange(n) + 0.5}},
                  {"options": {"indices": np.arange(n) + 10**6}},
                  {"options": {"indices": np.arange(n - 1)}}, {"options": {"other": 1}},
                  {"options": {"indices": [[1, 2]] * (n - 1) + [[3]]}}, {"options": 3}]
    for trial in range(trials):
        envs.reset(seed=trial)
        twins.reset(seed=trial)
        bad = bad_resets[trial % len(bad_resets)]
        try:
            envs.reset(**bad)
            ok, detail = False, f"reset took {bad!r}"
        except ValueError:
            cells = rng.integers(0, 100, n)
            ok, detail = _same(envs.step(cells), twins.step(cells)), f"state changed: {bad}"
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"{bad!r}: {type(exc).__name__}: {exc}"
        tally.add("invalid reset, vector env", ok, detail)


# ---------------------------------------------------------------- damaged files
def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    raw = bytearray(data)
    raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
    return bytes(raw)


def _bank_contents(bank: Any) -> list[np.ndarray]:
    arrays = [bank.features, bank.logits, bank.labels, bank.head_weight, bank.head_bias]
    return [np.asarray(a) for a in arrays] + ([np.asarray(bank.images)]
                                              if bank.images is not None else [])


def damaged_banks(tally: Tally, rng: np.random.Generator, bank_path: Path, work: Path,
                  flips: int) -> None:
    from glimpse_gym.bank import FeatureBank

    clean = _bank_contents(FeatureBank.load(bank_path))
    clean_meta = json.loads((bank_path / "meta.json").read_text())
    for name in sorted(p.name for p in bank_path.iterdir()):
        for _ in range(flips):
            target = work / "bank"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(bank_path, target)
            (target / name).write_bytes(_flip((target / name).read_bytes(), rng))
            try:
                bank = FeatureBank.load(target)
            except BankError as exc:
                tally.add(f"bit flip, bank {name}", str(target) in str(exc), str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                tally.add(f"bit flip, bank {name}", False, f"{type(exc).__name__}: {exc}")
                continue
            same = bank.meta == clean_meta and all(
                np.array_equal(a, b) for a, b in zip(_bank_contents(bank), clean, strict=True))
            tally.add(f"bit flip, bank {name}", same, "loaded other contents silently",
                      refused=False)


def meta_edits(tally: Tally, bank_path: Path, work: Path) -> None:
    from glimpse_gym.bank import FeatureBank
    from glimpse_gym.bank_checks import meta_checksum

    meta = json.loads((bank_path / "meta.json").read_text())
    model, dataset = meta["model"], meta["dataset"]
    edits = {
        "rf": {"model": {**model, "rf": model["rf"] + 2}},
        "stride 0": {"model": {**model, "stride": 0}},
        "stride": {"model": {**model, "stride": model["stride"] + 1}},
        "image_shape": {"image_shape": [1, 40, 40]},
        "grid": {"grid": [meta["grid"][0] - 1, meta["grid"][1]]},
        "grid null": {"grid": None},
        "class_names": {"dataset": {**dataset, "class_names": dataset["class_names"][:-1]}},
        "num_classes": {"model": {**model, "num_classes": model["num_classes"] + 1}},
        "stats": {"stats": {**meta["stats"], "image_acc": 1.0}},
        "normalization": {"normalization": {"mean": [0.5, 0.5], "std": [1.0]}},
        "labels spec": {"arrays": {k: v for k, v in meta["arrays"].items() if k != "labels"}},
        "file escapes": {"arrays": {**meta["arrays"], "features": {
            **meta["arrays"]["features"], "file": "../features.npy"}}},
        "num_images": {"dataset": {**dataset, "num_images": dataset["num_images"] - 1}},
        "dtype": {"arrays": {**meta["arrays"], "logits": {**meta["arrays"]["logits"],
                                                          "dtype": "float16"}}},
    }
    for name, change in edits.items():
        # a recomputed checksum makes a consistent file: the field checks catch the fields
        # that other fields determine; the statistics are covered by the checksum alone
        for signed in (False,) if name == "stats" else (False, True):
            target = work / "bank"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(bank_path, target)
            edited = {**meta, **change}
            if signed:  # the checksum made to match: only the field checks can tell
                edited["meta_sha256"] = meta_checksum(edited)
            (target / "meta.json").write_text(json.dumps(edited))
            kind = "meta.json edit, checksum " + ("recomputed" if signed else "kept")
            try:
                FeatureBank.load(target)
                tally.add(kind, False, f"{name} passed")
            except BankError as exc:
                tally.add(kind, "meta.json" in str(exc), str(exc))
            except Exception as exc:  # noqa: BLE001
                tally.add(kind, False, f"{name}: {type(exc).__name__}: {exc}")


def _payload_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _payload_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(
            _payload_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def damaged_files(tally: Tally, rng: np.random.Generator, files: dict[str, tuple[Path, Callable]],
                  work: Path, flips: int) -> None:
    for kind, (path, load) in files.items():
        clean = load(path)
        raw = path.read_bytes()
        for _ in range(flips):
            target = work / path.name
            target.write_bytes(_flip(raw, rng))
            try:
                loaded = load(target)
            except GlimpseGymError as exc:
                tally.add(f"bit flip, {kind}", str(target) in str(exc), str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                tally.add(f"bit flip, {kind}", False, f"{type(exc).__name__}: {exc}")
                continue
            tally.add(f"bit flip, {kind}", _payload_equal(clean, loaded),
                      "loaded other contents silently", refused=False)


# ---------------------------------------------------------------- crafted files
def crafted(tally: Tally, runs: Path, work: Path) -> None:
    marker = work / "command-ran"
    pt = crafted_pt(work / "crafted.pt", marker)
    for kind, loaders in (("crafted .pt", pt_loaders(pt, marker, runs, work)),
                          ("crafted .zip", zip_loaders(runs, work, marker))):
        for name, load in loaders.items():
            # a crafted .pt is refused (exit status 2 or the project's error); a crafted zip
            # is refused (pickled weights) or loads from its manifest and weights (pickled
            # data entries, never decoded): exit status 0 or 2, and no command ran
            accepted = (2,) if kind == "crafted .pt" else (0, 2)
            try:
                result = load()
                refused = isinstance(result, int) and result in accepted
            except GlimpseGymError:
                refused = True
            except Exception as exc:  # noqa: BLE001
                refused = False
                name = f"{name}: {type(exc).__name__}: {exc}"
            ran = marker.exists()
            marker.unlink(missing_ok=True)
            tally.add(kind, refused and not ran, f"{name} (ran the command: {ran})")


# ---------------------------------------------------------------- set-up and report
def run(flips: int, trials: int, seed: int = 0) -> dict[str, Any]:
    from agents.reinforce import load_reinforce
    from agents.saccader import load_saccader
    from agents.sb3_io import read_sb3
    from glimpse_gym.bagnet import load_checkpoint
    from glimpse_gym.pretrained import DEFAULT_CHECKPOINT

    rng = np.random.default_rng(seed)
    tally = Tally()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glimpse-robustness-") as tmp:
        os.environ.setdefault("GLIMPSE_GYM_CACHE", str(Path(tmp) / "cache"))
        work, runs = Path(tmp) / "work", Path(tmp) / "runs"
        work.mkdir()
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()):
            make_runs(runs)
            actions_and_resets(tally, rng, trials)
            damaged_banks(tally, rng, runs / "banks" / "test", work, flips)
            meta_edits(tally, runs / "banks" / "test", work)

            def sb3(path: Path) -> Any:
                f = read_sb3(path)
                return {"manifest": f.manifest, "data": f.data, "params": f.params}

            damaged_files(tally, rng, {
                "BagNet checkpoint": (DEFAULT_CHECKPOINT, load_checkpoint),
                "Saccader checkpoint": (runs / "saccader" / "policy.pt",
                                        lambda p: load_saccader(p)[1]),
                "REINFORCE checkpoint": (runs / "reinforce" / "best.pt",
                                         lambda p: load_reinforce(p)[1]),
                "PPO zip": (runs / "ppo" / "last.zip", sb3),
            }, work, flips)
            crafted(tally, runs, work)
    rows = {k: {"trials": n, "as_documented": ok, "refused": refused}
            for k, (n, ok, refused) in tally.rows.items()}
    total = sum(r["trials"] for r in rows.values())
    good = sum(r["as_documented"] for r in rows.values())
    return {"rows": rows, "total": total, "as_documented": good, "failures": tally.failures,
            "flips_per_file": flips, "trials": trials, "seed": seed,
            "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flips", type=int, default=200,
                        help="random single-bit flips per file (default: 200)")
    parser.add_argument("--trials", type=int, default=200,
                        help="invalid actions / resets per env kind (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flips and actions")
    parser.add_argument("--out", default="runs/bench/robustness.json", help="JSON summary")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    result = run(args.flips, args.trials, args.seed)
    print(f"{'trial':40s} {'tried':>6s} {'as documented':>14s} {'of which refused':>17s}")
    for kind, row in result["rows"].items():
        print(f"{kind:40s} {row['trials']:6d} {row['as_documented']:14d} "
              f"{row['refused']:17d}")
    print(f"{'all':40s} {result['total']:6d} {result['as_documented']:14d}  "
          f"({result['seconds']:.0f} s)")
    for line in result["failures"]:
        print("  failed:", line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return 0 if result["total"] == result["as_documented"] else 1


if __name__ == "__main__":
    sys.exit(main())
