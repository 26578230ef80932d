"""One threshold rule and one Otsu for label maps, the CLI, the logic and the metrics.

Otsu's threshold is checked against two independent implementations (scikit-image's
``threshold_otsu`` and SimpleITK's ``OtsuThresholdImageFilter``, 256 bins each); the label
map and the ``dice_otsu`` metric must cut the same map at the same place (before this rule
was shared they used two Otsu algorithms and disagreed on some maps).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from XAIExplainLib.imaging.thresholds import check_threshold, otsu_threshold, resolve_threshold, threshold_map


def bimodal_map(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.6, 0.15, 1096)])
    return np.clip(values, 0.0, 1.0).astype(np.float32).reshape(64, 64)


@pytest.mark.parametrize("seed", range(3))
def test_otsu_matches_scikit_image_and_simpleitk_within_one_bin(seed):
    skimage_filters = pytest.importorskip("skimage.filters")
    sitk = pytest.importorskip("SimpleITK")
    values = bimodal_map(seed) * 300.0 - 100.0  # any units: the threshold is in the map's own
    bin_width = float(values.max() - values.min()) / 256
    ours = otsu_threshold(values)
    assert ours == pytest.approx(float(skimage_filters.threshold_otsu(values, nbins=256)), abs=bin_width)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(256)
    otsu.Execute(sitk.GetImageFromArray(values[None]))
    assert ours == pytest.approx(otsu.GetThreshold(), abs=bin_width)


def test_a_binary_map_is_cut_in_the_middle_and_a_constant_one_selects_nothing():
    binary = np.zeros((8, 8), np.float32)
    binary[2:5, 2:6] = 1.0
    assert otsu_threshold(binary) == pytest.approx(0.5)
    mask, used = threshold_map(np.full((3, 4), 0.7, np.float32), "otsu")
    assert used == pytest.approx(0.7) and not mask.any()


def test_label_map_and_dice_otsu_cut_every_map_at_the_same_place():
    """Failed before: the label map used SimpleITK's Otsu, the metric its own (seed 6 differed)."""
    from XAIExplainLib.evaluation import dice_sweep

    for seed in range(20):
        values = bimodal_map(seed)
        truth = values > 0.45
        mask, _ = threshold_map(values, "otsu")
        mask = mask.astype(bool)
        expected = 2.0 * (mask & truth).sum() / (mask.sum() + truth.sum())
        sweep = dice_sweep(torch.from_numpy(values)[None], torch.from_numpy(truth)[None])
        assert sweep.otsu_dice.item() == pytest.approx(expected, abs=1e-6), seed  # one voxel moves it by ~2e-4


@pytest.mark.parametrize("good, expected", [(0, 0.0), (0.5, 0.5), (np.float32(0.25), 0.25), ("OTSU", "otsu"),
                                            (" otsu ", "otsu")])
def test_accepted_thresholds(good, expected):
    assert check_threshold(good) == expected


@pytest.mark.parametrize("bad, error", [(1.0, ValueError), (-0.1, ValueError), (1.5, ValueError),
                                        (float("inf"), ValueError), ("median", ValueError), (True, TypeError),
                                        (None, TypeError)])
def test_refused_thresholds_say_what_is_accepted(bad, error):
    with pytest.raises(error, match=r"label threshold must be a number in \[0, 1\).*or 'otsu'"):
        resolve_threshold(np.zeros(3), bad)


@pytest.mark.parametrize("value", ["1.0", "-0.5", "2", "nan"])
def test_the_cli_and_the_mrml_bridge_refuse_the_same_thresholds(value):
    """Failed before: the CLI refused 1.0 and 2 while the MRML bridge (and so the logic) took them."""
    from XAIExplainLib.cli.errors import UserError
    from XAIExplainLib.cli.options import parse_label_threshold
    from XAIExplainLib.mrml import labels

    with pytest.raises(UserError, match=r"\[0, 1\)"):
        parse_label_threshold(value)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        labels.threshold_map(np.zeros((2, 2), np.float32), float(value))
