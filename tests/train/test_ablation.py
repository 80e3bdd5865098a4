"""``glimpse ablation``: its plan is ``glimpse results`` per block, and its comparison reads
the blocks' folders into the right means and differences."""

from __future__ import annotations

import json

import pytest

from agents.stats import combine_results
from glimpse_gym.errors import UsageError
from train.ablation import AblationConfig, run_ablation, summarise, write_summary
from train.interpretability import combine_curves
from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet

T, TMAX = 6, 12


def _run(errors: dict[str, float], curves: dict[str, float]) -> dict:
    """One seed's evaluation: constant error per policy, flat deletion/insertion curves."""
    ts = range(1, TMAX + 1)
    return {"policies": {n: {"error": {str(t): e for t in ts},
                             "coverage": {str(t): 0.1 for t in ts}} for n, e in errors.items()},
            "interpretability": {"images": 100, "tmax": TMAX, "curves": {
                n: {"deletion": [a] * TMAX, "insertion": [1 - a] * TMAX}
                for n, a in curves.items()}}}


def _block(folder, seeds, full_errors, saccader, attention, nam) -> None:
    ckpt = folder / f"bagnet-s{seeds[0]}" / "bagnet.pt"
    pretrain_bagnet(PretrainConfig(dataset="digits", epochs=1, batch_size=32,
                                   max_train_images=32, out=str(ckpt), progress=False,
                                   eval_test=False, width=4, feature_dim=8, nam=nam))
    for s, full in zip(seeds, full_errors, strict=True):  # (the metrics of a real run)
        d = folder / f"bagnet-s{s}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps({
            "epoch": 3, "test": {"image_error": full, "cell_acc": 0.3 + s / 100},
            "train_time_s": 600.0 + s, "train_cpu_s": 1100.0 + 100 * full * s,
            "threads": 1, "images_per_epoch": 1000}))
    runs = []
    for i, _ in enumerate(seeds):
        curves = {"saccader": 0.5 + i / 100, "random": 0.9, "saliency": 0.4}
        if attention is not None:
            curves["attention:nam"] = attention + i / 100
        runs.append(_run({"saccader": saccader[i], "ordered-logits": 0.02, "random": 0.5},
                         curves))
    combined = folder / "eval" / "combined"
    combined.mkdir(parents=True)
    (combined / "results.json").write_text(json.dumps(
        {"policies": combine_results(runs), "interpretability": combine_curves(runs)}))


def test_the_comparison_of_blocks(tmp_path) -> None:
    seeds = [0, 1, 2]
    _block(tmp_path / "plain", seeds, [0.010, 0.011, 0.012], [0.02, 0.021, 0.022], None, False)
    _block(tmp_path / "nam", seeds, [0.020, 0.021, 0.022], [0.02, 0.022, 0.021], 0.8, True)
    found = summarise("cluttered-mnist", {"plain": tmp_path / "plain", "nam": tmp_path / "nam"},
                      seeds)
    nam, plain = found["blocks"]["nam"], found["blocks"]["plain"]
    assert nam["bagnet"]["full_image_error"]["mean"] == pytest.approx(0.021)
    assert nam["bagnet"]["parameters"] > plain["bagnet"]["parameters"]  # NAM's gammas
    assert nam["error"]["saccader"]["mean"] == pytest.approx(0.021)
    versus = found["versus_plain"]["nam"]
    assert versus["full_image_error"]["mean"] == pytest.approx(0.010)
    assert versus["full_image_error"]["differs"]
    assert not versus["error:saccader"]["differs"]
    assert set(found["maps_versus_glimpses"]["plain"]) == {"saliency - saccader"}
    pair = found["maps_versus_glimpses"]["nam"]["attention:nam - saccader"]
    assert pair["deletion"]["mean"] == pytest.approx(0.3) and pair["deletion"]["differs"]
    assert pair["insertion_mean"]["mean"] == pytest.approx(-0.3)
    assert pair["deletion"]["same_sign"] == 3
    # CPU ms per training image: 1100 + 100 * error * seed CPU seconds over 3 epochs of 1,000
    cpu = nam["bagnet"]["train_cpu_ms_per_image"]["values"]
    assert cpu == pytest.approx([1000 * (1100 + 100 * e * s) / 3000
                                 for s, e in enumerate([0.020, 0.021, 0.022])])
    assert nam["interpretability"]["attention:nam"]["deletion"]["mean"] == pytest.approx(0.81)
    write_summary(found, tmp_path / "summary")
    text = (tmp_path / "summary" / "results.md").read_text()
    assert "| nam | attention:nam | 81.00 ± 1.00 |" in text
    assert "- nam - plain" in text and "full-image error +1.00" in text
    row = next(r for r in text.splitlines() if r.startswith("| nam | attention:nam - saccader"))
    assert row.split(" | ")[3].startswith("**+30.00 [")  # deletion at T: all seeds agree
    assert (tmp_path / "summary" / "ablation.png").stat().st_size > 0
    saved = json.loads((tmp_path / "summary" / "results.json").read_text())
    assert saved["blocks"]["plain"]["bagnet"]["epochs"] == 3
    (tmp_path / "adcm").mkdir()
    with pytest.raises(UsageError, match="not finished"):
        summarise("cluttered-mnist", {"adcm": tmp_path / "adcm"}, seeds)


def test_the_plan_is_glimpse_results_per_block(tmp_path, capsys) -> None:
    run_ablation(AblationConfig(task="cluttered-fashion", attention=["plain", "adcm"], seeds=[1],
                                out=str(tmp_path), dry_run=True))
    out = capsys.readouterr().out
    assert "== cluttered-fashion, plain BagNets ==" in out and out.count("--adcm") == 1
    assert f"{tmp_path}/cluttered-fashion-adcm/bagnet-s1" in out
    assert "--attention-checkpoint=attention=" in out and out.count("--interpretability ") == 2
    assert not (tmp_path / "cluttered-fashion").exists()
    for cfg in (AblationConfig(attention=["nam", "nam"]), AblationConfig(attention=["se"]),
                AblationConfig(task="imagenet")):
        with pytest.raises(UsageError):
            run_ablation(cfg)
