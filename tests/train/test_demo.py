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
    assert table["full-image"] == pytest.approx(recorded)
    assert table["true-label"] >= table["ordered-logits"] > table["random"]
    for split in ("train", "val", "test"):
        assert (tmp_path / "banks" / split / "meta.json").is_file()
    # one home for evaluation: glimpse evaluate and bank-info report the demo's numbers
    assert main(["evaluate", "--bank", str(tmp_path / "banks" / "test"), "--out",
                 str(tmp_path / "eval"), "--policy", "random", "--policy", "ordered-logits",
                 "--policy", "true-label", "--max-glimpses", "6", "--pictures", "0",
                 "--device", "cpu"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())["policies"]
    for name in ("random", "ordered-logits", "true-label", "full-image"):
        assert evaluated[name]["accuracy"]["6"] == table[name], name
    capsys.readouterr()
    assert main(["bank-info", "--bank", str(tmp_path / "banks" / "test"), "--glimpses",
                 "6"]) == 0
    printed = capsys.readouterr().out
    assert f"{'random':20s} {table['random']:9.2%}" in printed
