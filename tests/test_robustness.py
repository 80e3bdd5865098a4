"""The fuzz and damage script (benchmarks/robustness.py) on a small budget: every trial
behaves as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness.py"


def test_every_trial_behaves_as_documented() -> None:
    spec = importlib.util.spec_from_file_location("robustness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(flips=3, trials=10, seed=1)
    assert result["total"] > 80
    assert result["as_documented"] == result["total"], result["failures"]
    assert result["rows"]["crafted .pt"]["trials"] == 14
    assert result["rows"]["crafted .zip"]["trials"] == 4
