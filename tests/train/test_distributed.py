"""Commands under ``torchrun`` with 2 CPU processes (gloo), on the embedded default's data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_write import TIMING_FIELDS

REPO = Path(__file__).resolve().parents[2]
COMPACT = ["--feature-dtype", "int8", "--channels-last", "--no-store-logits"]


def torchrun(*args: str, nproc: int = 2, **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node=nproc -m train.cli ARGS``, one thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "train.cli", *args, "--threads", "1",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def glimpse(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "train.cli", *args, "--threads", "1",
                    "--no-progress"], cwd=REPO, check=True, capture_output=True)


def _meta_without_timing(path: Path) -> dict:
    meta = json.loads((path / "meta.json").read_text())
    for key in ("created", "meta_sha256"):
        meta.pop(key)
    for key in TIMING_FIELDS:
        meta["stats"].pop(key, None)
    return meta


def test_two_processes_write_the_bank_one_process_writes(tmp_path) -> None:
    """Byte for byte the same files (int8 with rank 0's scales, channels-last, no logits,
    parts of 100 images: 4 parts over 2 ranks); meta.json the same but for its timing."""
    common = ["extract-features", "--split", "test", "--shard-images", "100", *COMPACT]
    run = torchrun(*common, "--out", str(tmp_path / "two"))
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "(2 processes)" in out and out.count("wrote:") == 1  # rank 0 alone prints
    glimpse(*common, "--out", str(tmp_path / "one"))
    one, two = tmp_path / "one" / "test", tmp_path / "two" / "test"
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir()) and "features-00003.npy" in files
    for name in files:
        if name != "meta.json":
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert _meta_without_timing(one) == _meta_without_timing(two)
    bank = FeatureBank.load(two, verify=True)
    assert bank.meta["shards"] == [100, 100, 100, 59]
    assert sorted(p.name for p in tmp_path.joinpath("two").iterdir()) == ["test"]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _rank(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks in /proc")
def test_a_rank_killed_mid_run_leaves_no_bank(tmp_path) -> None:
    """Rank 1 is killed once the parts are being written: torchrun fails, nothing is at the
    target, and the next write there succeeds and removes the killed run's folder."""
    target = tmp_path / "banks"
    run = torchrun("extract-features", "--split", "train", "--shard-images", "20",
                   "--batch-size", "1", "--out", str(target))
    victim, deadline = None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        parts = list(target.glob(".train.tmp-*/features-*.npy")) if target.exists() else []
        if parts:
            victim = next((p for p in _children(run.pid) if _rank(p) == 1), None)
        time.sleep(0.05)
    assert victim is not None, "the ranks never started writing"
    os.kill(victim, signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    assert run.returncode != 0, out
    assert not (target / "train").exists()
    glimpse("extract-features", "--split", "train", "--shard-images", "500", "--out",
            str(target))
    assert FeatureBank.load(target / "train").num_images == 1294
    assert [p.name for p in target.iterdir()] == ["train"]  # the killed run's folder is gone


def test_a_rank_that_raises_fails_the_run_at_once_and_leaves_no_bank(tmp_path) -> None:
    """Rank 1 raises while rank 0 waits for its parts: the run fails within seconds (not at
    the process group's timeout), says why, and nothing is at the target."""
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node=2", str(REPO / "tests" / "train" / "ddp_raise.py"),
                          str(tmp_path / "val")], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1",
                                           "PYTHONPATH": str(REPO)})
    assert run.returncode != 0
    assert time.monotonic() - t0 < 120
    assert "rank 1: a broken batch" in run.stdout + run.stderr
    assert not (tmp_path / "val").exists()


def _epoch_losses(out: str) -> list[float]:
    return [float(line.split("loss ")[1].split()[0]) for line in out.splitlines()
            if line.startswith("epoch ")]


def test_pretraining_on_two_processes_learns_and_resumes_on_any_number(tmp_path) -> None:
    """2 processes train 2 epochs (the loss falls, rank 0 alone reports), 1 process resumes
    for a third, 2 processes again for a fourth; each checkpoint loads."""
    from glimpse_gym.bagnet import load_bagnet

    ckpt = tmp_path / "bagnet.pt"
    common = ["pretrain-bagnet", "--max-train-images", "512", "--batch-size", "64",
              "--lr", "0.01", "--no-eval-test", "--out", str(ckpt)]
    run = torchrun(*common, "--epochs", "2")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "2 processes" in out and out.count("wrote:") == 1
    first = _epoch_losses(out)
    assert len(first) == 2 and first[1] < first[0]
    model, meta = load_bagnet(str(ckpt))
    assert meta["metrics"]["epoch"] == 2
    assert meta["metrics"]["train"]["loss"] == pytest.approx(first[1], abs=1e-4)
    one = subprocess.run([sys.executable, "-m", "train.cli", *common, "--epochs", "3",
                          "--resume", "--threads", "1", "--no-progress"], cwd=REPO,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    assert [line.split(":")[0] for line in one.stdout.splitlines()
            if line.startswith("epoch ")] == ["epoch 3/3"]
    again = torchrun(*common, "--epochs", "4", "--resume")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch ")] == [
        "epoch 4/4"]
    assert load_bagnet(str(ckpt))[1]["metrics"]["epoch"] == 4
    assert _epoch_losses(out)[0] < first[0]


def test_a_mistake_under_torchrun_is_said_once(tmp_path) -> None:
    run = torchrun("pretrain-bagnet", "--batch-size", "63", "--epochs", "1",
                   "--out", str(tmp_path / "b.pt"))
    out, _ = run.communicate(timeout=300)
    assert run.returncode != 0
    assert out.count("glimpse: error: --batch-size 63 is the batch of one step over all "
                     "processes: make it a multiple of the 2 processes") == 1
