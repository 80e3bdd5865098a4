"""``glimpse evaluate --interpretability`` on the embedded default."""

from __future__ import annotations

import json

import pytest

from glimpse_gym.errors import UsageError
from train.evaluate import EvaluateConfig, evaluate
from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet


def test_curves_for_policies_saliency_and_attention_maps(tmp_path) -> None:
    att = PretrainConfig(dataset="digits", epochs=1, batch_size=32, max_train_images=64,
                         out=str(tmp_path / "att" / "bagnet.pt"), progress=False,
                         eval_test=False, width=4, feature_dim=8, nam=True, adcm=True)
    pretrain_bagnet(att)
    results = evaluate(EvaluateConfig(
        policy=["random", "ordered-logits"], max_glimpses=4, pictures=0, max_images=40,
        interpretability=True, attention_checkpoint=[att.out], interpretability_images=30,
        out=str(tmp_path / "eval"), progress=False))
    found = results["interpretability"]
    assert found["images"] == 30 and found["tmax"] == 4
    assert set(found["curves"]) == {"random", "ordered-logits", "saliency", "bagnet:nam",
                                    "bagnet:adcm"}
    for row in found["curves"].values():
        assert len(row["deletion"]) == len(row["insertion"]) == 4
        assert all(0 <= a <= 1 for a in row["deletion"] + row["insertion"])
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["interpretability"]["curves"]["saliency"] == found["curves"]["saliency"]
    assert (tmp_path / "eval" / "interpretability.png").stat().st_size > 0


def test_named_attention_and_seeds_combined_into_means_and_a_table(tmp_path) -> None:
    att = PretrainConfig(dataset="digits", epochs=1, batch_size=32, max_train_images=64,
                         out=str(tmp_path / "att" / "bagnet.pt"), progress=False,
                         eval_test=False, width=4, feature_dim=8, nam=True)
    pretrain_bagnet(att)
    runs = []
    for seed in (0, 1):
        runs.append(evaluate(EvaluateConfig(
            policy=["random", "ordered-logits"], max_glimpses=3, pictures=0, max_images=40,
            seed=seed, interpretability=True, attention_checkpoint=[f"soft={att.out}"],
            interpretability_images=30, out=str(tmp_path / f"seed{seed}"), progress=False)))
    plain = evaluate(EvaluateConfig(policy=["random"], max_glimpses=3, pictures=0,
                                    max_images=40, out=str(tmp_path / "plain"), progress=False))
    both = [str(tmp_path / "seed0"), str(tmp_path / "seed1")]
    combined = evaluate(EvaluateConfig(combine=both, out=str(tmp_path / "c"), progress=False))
    found = combined["interpretability"]
    assert found["seeds"] == 2 and found["tmax"] == 3 and found["images"] == 30
    assert set(found["curves"]) == {"random", "ordered-logits", "saliency", "soft:nam"}
    for name, row in found["curves"].items():
        for kind in ("deletion", "insertion"):
            values = [r["interpretability"]["curves"][name][kind] for r in runs]
            assert [p["mean"] for p in row[kind]] == pytest.approx(
                [(a + b) / 2 for a, b in zip(*values, strict=True)])
            assert row[f"{kind}_mean"]["mean"] == pytest.approx(
                sum(sum(v) for v in values) / 6)
    # the random cells differ between the seeds, the saliency does not
    assert found["curves"]["saliency"]["deletion"][0]["std"] == 0
    text = (tmp_path / "c" / "results.md").read_text()
    assert "| soft:nam |" in text and "mean ± std over 2 seeds" in text
    assert (tmp_path / "c" / "interpretability.png").stat().st_size > 0
    # a run without the test: the combination has none
    mixed = evaluate(EvaluateConfig(combine=[both[0], str(tmp_path / "plain")],
                                    out=str(tmp_path / "m"), progress=False))
    assert "interpretability" not in mixed and "interpretability" not in plain


def test_attention_checkpoints_must_have_a_block_and_the_grid(tmp_path) -> None:
    plain = PretrainConfig(dataset="digits", epochs=1, batch_size=32, max_train_images=32,
                           out=str(tmp_path / "plain" / "bagnet.pt"), progress=False,
                           eval_test=False, width=4, feature_dim=8)
    pretrain_bagnet(plain)
    with pytest.raises(UsageError, match="has no NAM or ADCM block"):
        evaluate(EvaluateConfig(interpretability=True, attention_checkpoint=[plain.out],
                                out=str(tmp_path / "e"), progress=False))


def test_fewer_images_than_asked_and_attention_without_the_test(tmp_path, capsys) -> None:
    att = PretrainConfig(dataset="digits", epochs=1, batch_size=32, max_train_images=32,
                         out=str(tmp_path / "att" / "bagnet.pt"), progress=False,
                         eval_test=False, width=4, feature_dim=8, adcm=True)
    pretrain_bagnet(att)
    # --max-images below --interpretability-images: the test reads the images evaluated
    results = evaluate(EvaluateConfig(
        policy=["random"], max_glimpses=2, pictures=0, max_images=20, interpretability=True,
        attention_checkpoint=[att.out], out=str(tmp_path / "e"), progress=False))
    assert results["interpretability"]["images"] == 20
    assert "tested on another model's decisions" in capsys.readouterr().out
    with pytest.raises(UsageError, match="add --interpretability"):
        evaluate(EvaluateConfig(attention_checkpoint=[att.out], out=str(tmp_path / "f"),
                                progress=False))
