"""nnU-Net's sliding windows in the engine: window starts, Gaussian and mirroring against nnU-Net's own code."""
import numpy as np
import pytest
import torch

import XAIExplainLib as xai
from XAIExplainLib.engine.windows import Tiling, gaussian_weights, window_starts

pytest.importorskip("nnunetv2")

NNUNET = Tiling(steps="even", gaussian_centre="floor", pad="centred", pad_value=0.0)


@pytest.mark.parametrize("length, patch", [(25, 16), (31, 24), (110, 64), (64, 64), (513, 128), (200, 96), (7, 12)])
def test_even_steps_are_nnunets(length, patch):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    expected = compute_steps_for_sliding_window((max(length, patch),), (patch,), 0.5)[0]
    assert window_starts(length, patch, 0.5, "even") == expected


@pytest.mark.parametrize("patch", [(16, 24, 24), (5, 7, 9), (128, 128, 128)])
def test_floor_centred_gaussian_is_nnunets(patch):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    expected = compute_gaussian(patch, 1.0 / 8, 1, torch.float64, torch.device("cpu"))
    got = gaussian_weights(patch, "cpu", 1.0 / 8, "floor").double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


class _Conv(torch.nn.Module):
    """A 3D segmenter without any symmetry, so mirroring changes its output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv3d(4, 3, (3, 1, 3), padding=(1, 0, 1)))

    def forward(self, x):
        return self.body(x) + torch.linspace(0, 1, x.shape[-1])


def test_mirrored_prediction_is_the_mean_over_mirrored_windows():
    model = _Conv().eval()
    volume = np.random.default_rng(0).normal(size=(10, 12, 9)).astype(np.float32)
    got = xai.predict_volume(model, volume, mode="volume", patch_size=(10, 12, 9), mirror_axes=(0, 2))
    x = torch.from_numpy(volume)[None, None]
    with torch.no_grad():
        flips = [(), (2,), (4,), (2, 4)]
        expected = sum(torch.flip(model(torch.flip(x, f)), f) for f in flips) / 4
    np.testing.assert_allclose(got, expected[0].numpy(), rtol=1e-5, atol=1e-5)


def test_mirrored_maps_are_mirrored_back_and_averaged():
    model = _Conv().eval()
    volume = np.random.default_rng(1).normal(size=(10, 12, 9)).astype(np.float32)
    got = xai.explain_volume(model, volume, ["gradcam", "saliency"], mode="volume", patch_size=(10, 12, 9),
                             mirror_axes=(1,), target=xai.SegmentationTarget(1, region="all"), layer="body.1",
                             normalize=False)
    x = torch.from_numpy(volume)[None, None]
    for method in ("gradcam", "saliency"):
        plain = xai.explain(model, x, method, target=xai.SegmentationTarget(1, region="all"), layer="body.1",
                            normalize=False)
        mirrored = xai.explain(model, torch.flip(x, (3,)), method, target=xai.SegmentationTarget(1, region="all"),
                               layer="body.1", normalize=False)
        expected = (plain + torch.flip(mirrored, (2,))) / 2
        np.testing.assert_allclose(got[method], expected[0].numpy(), rtol=1e-4, atol=1e-6)


def test_centred_zero_padding_keeps_a_voxel_target_in_place():
    model = _Conv().eval()
    volume = np.random.default_rng(2).normal(size=(6, 12, 9)).astype(np.float32)
    target = xai.SegmentationTarget(2, region=(3, 5, 4))
    got = xai.explain_volume(model, volume, "saliency", mode="volume", patch_size=(10, 12, 9), tiling=NNUNET,
                             target=target, normalize=False)
    padded = torch.nn.functional.pad(torch.from_numpy(volume), (0, 0, 0, 0, 2, 2))[None, None]
    expected = xai.explain(model, padded, "saliency", target=xai.SegmentationTarget(2, region=(5, 5, 4)),
                           normalize=False)[0, 2:8]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_bad_window_options_are_refused():
    model = _Conv().eval()
    volume = np.zeros((6, 8, 8), np.float32)
    with pytest.raises(ValueError, match="mirror_axes must be distinct spatial axes out of 0, 1, 2"):
        xai.predict_volume(model, volume, mode="volume", mirror_axes=(3,))
    with pytest.raises(ValueError, match="mirror_axes applies to volume mode"):
        xai.predict_volume(model, volume[0], mode="slices", mirror_axes=(0,))
    with pytest.raises(ValueError, match="Tiling.steps must be one of"):
        Tiling(steps="nnunet")


def test_outputs_of_mirrored_nnunet_windows_equal_predict_volume():
    model = _Conv().eval()
    volume = np.random.default_rng(4).normal(size=(13, 20, 7)).astype(np.float32)
    options = dict(mode="volume", patch_size=(8, 12, 10), overlap=0.5, tiling=NNUNET, mirror_axes=(0, 2))
    _, outputs = xai.explain_volume(model, volume, "gradcam", layer="body.1", return_outputs=True, **options)
    expected = xai.predict_volume(model, volume, **options)
    assert outputs.shape == (3,) + volume.shape
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)


def test_windows_one_voxel_thick_visit_each_slice_once():
    """A 2D model's windows are 1 voxel thick along the slice axis: nnU-Net's step rule would repeat starts
    (step 0.5 voxel); each start comes once, which changes no blended voxel."""
    assert window_starts(7, 1, 0.5, "even") == list(range(7))
    assert window_starts(1, 1, 0.5, "even") == [0]
