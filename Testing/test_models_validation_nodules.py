"""The nodule models on freshly generated chest phantoms (seeds never used in training).

Thresholds of issue 5: lung-nodule-2d AUC >= 0.95 and lung-nodule-seg-3d Dice >= 0.8.
Dice is the global (pooled) Dice over the test nodules, the usual summary for a
set of lesions; the mean per-nodule Dice and the detection count are asserted
with the margins they actually reach, so that small-nodule performance cannot
silently degrade.  ``python -m XAIExplainLib.models.validate`` runs more samples.
"""
from __future__ import annotations

import pytest
import torch

from XAIExplainLib.models import load_model
from XAIExplainLib.models import validate

TEST_SEED = 424242  # training uses 1000-1200 and 2000-2200


@pytest.fixture(autouse=True, scope="module")
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_lung_nodule_auc_on_fresh_phantoms():
    result = validate.nodule_auc(load_model("lung-nodule-2d"), patients=5, seed=TEST_SEED)
    assert result["positives"] >= 30
    # Issue 5 asks for AUC >= 0.95; fresh-phantom draws give 0.92-0.96 with the bundled
    # weights, so that target is not met reliably (issue 5 stays open). This floor catches
    # regressions of the bundled model without pretending the target is reached.
    assert result["auc"] >= 0.90, result


def test_nodule_gradcam_points_at_the_nodule_from_the_default_layer():
    """The card's layer (1/4 resolution) localises; the last block's map spreads over the lung."""
    model = load_model("lung-nodule-2d")
    result = validate.nodule_pointing_game(model, patients=3, seed=TEST_SEED)
    default = model.card.target_layers.default
    assert default == "features.block2"
    assert result[default] >= 0.45, result
    assert result[default] - result["features.block4"] >= 0.3, result


def test_lung_nodule_segmentation_dice_on_fresh_phantoms():
    result = validate.segmentation_dice(load_model("lung-nodule-seg-3d"), crops=6, seed=TEST_SEED)
    assert result["dice_pooled"] >= 0.8, result
    assert result["detected"] == result["crops"], result
    assert result["dice_mean"] >= 0.7, result
