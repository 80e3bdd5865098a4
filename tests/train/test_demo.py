"""``glimpse demo`` runs offline on the embedded default and prints a consistent table."""

from __future__ import annotations

import json

import pytest

from glimpse_gym.bagnet import load_checkpoint
from glimpse_gym.pretrained import default_checkpoint
from train.cli import main


def test_demo_prints_the_glimpse_comparison(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--no-progress", "--device", "cpu",
                 "--no-agents"]) == 0
    out = capsys.readouterr().out
    assert "digits test split: 359 images, 10x10 grid" in out
    table = json.loads((tmp_path / "summary.json").read_text())
    recorded = load_checkpoint(default_checkpoint())["metrics"]["test"]["image_acc"]
    assert table["full image"] == pytest.approx(recorded)
    assert table["true-label top 6 cells (upper bound)"] >= table["ordered logits 6 cells"]
    assert table["true-label top 6 cells (upper bound)"] > table["random 6 cells"]
    for split in ("train", "val", "test"):
        assert (tmp_path / "banks" / split / "meta.json").is_file()
