"""The command line answers a user's mistake in one line (``glimpse: error: ...``, exit 2),
shows a traceback for real bugs, and shows one for mistakes too with ``--debug``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from glimpse_gym.pretrained import DEFAULT_CHECKPOINT
from train.cli import main
from train.extract_features import ExtractConfig, extract_features


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    extract_features(ExtractConfig(out=str(root / "banks"), split=["test"], progress=False,
                                   device="cpu"))
    return root / "banks" / "test"


def _one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glimpse: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _flip_middle(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def _npz(tmp_path, name, **arrays):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _cases(bank, tmp_path) -> dict:
    damaged_bank = tmp_path / "damaged"
    shutil.copytree(bank, damaged_bank)
    _flip_middle(damaged_bank / "features.npy")
    damaged_ckpt = tmp_path / "damaged.pt"
    shutil.copy(DEFAULT_CHECKPOINT, damaged_ckpt)
    _flip_middle(damaged_ckpt)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"config": {}}))
    images = np.zeros((20, 28, 28), np.uint8)
    extra = _npz(tmp_path, "extra", images=images, labels=np.zeros(20, int), x_test=images)
    strings = _npz(tmp_path, "strings", images=images, labels=np.array(["a"] * 20))
    ev = ["evaluate", "--bank", str(bank), "--out", str(tmp_path / "e")]
    pre = ["pretrain-bagnet", "--out", str(tmp_path / "p.pt"), "--no-progress"]
    return {
        "missing bank": (["evaluate", "--bank", str(tmp_path / "nowhere")],
                         "no feature bank at .*nowhere.*extract-features"),
        "damaged bank": (["evaluate", "--bank", str(damaged_bank)],
                         "features.npy is damaged: its sha256"),
        "missing checkpoint": (["extract-features", "--checkpoint", str(tmp_path / "no.pt")],
                               "no BagNet checkpoint at .*no.pt"),
        "damaged checkpoint": (["extract-features", "--checkpoint", str(damaged_ckpt)],
                               "damaged.pt is (damaged|not a readable)"),
        "results.json as policy": ([*ev, "--policy", f"r={results}"],
                                   "results.json is not a readable policy checkpoint \\(a JSON"),
        "BagNet as policy": ([*ev, "--policy", f"b={DEFAULT_CHECKPOINT}"],
                             "is a BagNet checkpoint, not a policy; pass it as --checkpoint"),
        "unknown policy": ([*ev, "--policy", "oracle"], "unknown policy 'oracle'"),
        "unknown dataset": ([*pre, "--dataset", "clutered-mnist"],
                            "did you mean 'cluttered-mnist'"),
        "arrays without path": ([*pre, "--dataset", "arrays"],
                                "--data-option path=FILE.npz"),
        "npz with extra keys": ([*pre, "--dataset", "arrays", "--data-option",
                                 f"path={extra}"], "x_test"),
        "string labels": ([*pre, "--dataset", "arrays", "--data-option",
                           f"path={strings}"],
                          "np.unique\\(labels, return_inverse=True\\)"),
        "bad device": ([*ev, "--device", "tpu"], "device must be 'auto', 'cpu'"),
        "bad threads": ([*ev, "--threads", "0"], "--threads must be a positive integer"),
        "bad data option": ([*pre, "--data-option", "canvas_size"], "expected KEY=VALUE"),
        "resume with nothing": (["train", "reinforce", "--out", str(tmp_path / "r"),
                                 "--resume"], "nothing to continue"),
    }


CASES = ["missing bank", "damaged bank", "missing checkpoint", "damaged checkpoint",
         "results.json as policy", "BagNet as policy", "unknown policy", "unknown dataset",
         "arrays without path", "npz with extra keys", "string labels", "bad device",
         "bad threads", "bad data option", "resume with nothing"]


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_is_one_line_and_exit_2(bank, tmp_path, capsys, case) -> None:
    argv, pattern = _cases(bank, tmp_path)[case]
    line = _one_line_error(capsys, argv)
    assert __import__("re").search(pattern, line), line


def test_a_finished_run_is_not_overwritten_unless_told(bank, tmp_path, capsys) -> None:
    argv = ["evaluate", "--bank", str(bank), "--out", str(tmp_path / "e"), "--pictures", "0",
            "--max-glimpses", "2", "--occlusion-glimpses", "2"]
    assert main(argv) == 0
    assert f"wrote: {tmp_path / 'e'}/ (results.json" in capsys.readouterr().out
    line = _one_line_error(capsys, argv)
    assert "holds a finished run (results.json); pass --overwrite" in line
    assert main([*argv, "--overwrite"]) == 0


def test_a_bug_shows_its_traceback_and_debug_shows_a_mistakes(bank, monkeypatch,
                                                              capsys) -> None:
    import train.tools

    def broken(cfg):
        raise RuntimeError("a bug")

    monkeypatch.setattr(train.tools, "bank_info", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["bank-info", "--bank", str(bank)])
    monkeypatch.undo()
    assert main(["--debug", "bank-info", "--bank", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("glimpse: error:")


def test_an_interrupted_run_says_how_to_resume(monkeypatch, tmp_path, capsys) -> None:
    import train.reinforce

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.reinforce, "train_reinforce", interrupted)
    assert main(["train", "reinforce", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert f"if a checkpoint was saved, it is in {tmp_path}" in err and "--resume" in err
