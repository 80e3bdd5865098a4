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


def test_attention_checkpoints_must_have_a_block_and_the_grid(tmp_path) -> None:
    plain = PretrainConfig(dataset="digits", epochs=1, batch_size=32, max_train_images=32,
                           out=str(tmp_path / "plain" / "bagnet.pt"), progress=False,
                           eval_test=False, width=4, feature_dim=8)
    pretrain_bagnet(plain)
    with pytest.raises(UsageError, match="has no NAM or ADCM block"):
        evaluate(EvaluateConfig(interpretability=True, attention_checkpoint=[plain.out],
                                out=str(tmp_path / "e"), progress=False))
