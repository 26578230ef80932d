"""No frame along the field of view in a 2D classifier's layer maps (issue 25 section 1).

Convolutions pad with zeros, but inside a network the background's features are not zero,
so the cells near the image edge hold activations no cell inside the image has; Grad-CAM
weights them by channel-wide gradient means and drew a frame (lung1: slice 30's maximum at
an image corner). The references: a model whose output ignores the border (its map must
show no frame), Grad-CAM written out here on the slice placed in a larger background, the
receptive-field radius of plain convolution stacks, and the real lung1 CT.
"""
from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from XAIExplainLib.engine.edge_margin import crop_index, edge_reach, pad_slices
from XAIExplainLib.models import explain_image
from XAIExplainLib.models.plain_module import module_model

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SIZE = 40
INNER = SIZE - 12  # the central window the model reads
RING = 2  # the ring of input pixels checked for a frame


class IgnoresTheBorder(nn.Module):
    """Two 3x3 convolutions and a head that reads only a fixed central window of the map.

    ``conv2``'s channel 0 answers the background with 1 inside the image but more at the
    edge (it sums its zero-padded neighbourhood with negative weights): an edge response the
    output never reads. Channel 1 answers bright blobs: the evidence.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(1, 2, 3, padding=1)
        self.act2 = nn.ReLU()
        self.classifier = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0 / 9)
            self.conv1.bias.fill_(1.0)  # the background (0) becomes 1 inside the network
            self.conv2.weight[0].fill_(-1.0 / 9)
            self.conv2.bias[0] = 2.0  # 1 on the background, up to 1.56 in a corner
            self.conv2.weight[1].fill_(1.0 / 9)
            self.conv2.bias[1] = -1.0  # 0 on the background, positive on a blob
            self.classifier.weight.copy_(torch.tensor([[0.0, 0.0], [0.1, 5.0]]))
            self.classifier.bias.zero_()

    def forward(self, x):
        features = self.act2(self.conv2(self.act1(self.conv1(x))))
        top, left = (features.shape[2] - INNER) // 2, (features.shape[3] - INNER) // 2
        inner = features[:, :, top:top + INNER, left:left + INNER]  # the border never reaches the output
        return self.classifier(inner.mean(dim=(2, 3)))


def _blob_image(slices: int = 2) -> sitk.Image:
    array = np.zeros((slices, SIZE, SIZE), np.float32)
    array[:, 18:22, 19:23] = 3.0
    return sitk.GetImageFromArray(array)


def _ring(shape) -> np.ndarray:
    ring = np.zeros(shape, bool)
    ring[..., :RING, :] = ring[..., -RING:, :] = True
    ring[..., :, :RING] = ring[..., :, -RING:] = True
    return ring


def _reference_gradcam(module: nn.Module, slice_: np.ndarray, margin: int) -> np.ndarray:
    """Grad-CAM written out (Selvaraju et al., eq. 1-2) on the slice inside ``margin`` pixels of background,
    cropped back to the slice."""
    x = torch.from_numpy(np.pad(slice_, margin))[None, None]
    captured = {}
    handle = module.act2.register_forward_hook(lambda _m, _i, out: captured.setdefault("a", out))
    try:
        score = module(x)[0, 1]
    finally:
        handle.remove()
    activation = captured["a"]
    gradient, = torch.autograd.grad(score, activation)
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1))[0].detach().numpy()
    return cam[margin:margin + slice_.shape[0], margin:margin + slice_.shape[1]]


def _with_background(module):
    """A plain module's card, declaring 0 (the blob image's background) as what lies outside its field of view:
    the margin is for models that say what their surround is."""
    model = module_model(module)
    model.card = replace(model.card, input=replace(model.card.input, pad_value=0.0))
    return model


def test_a_model_that_declares_no_background_is_explained_on_the_slice_as_it_is(two_torch_threads):
    module = IgnoresTheBorder().eval()
    image = _blob_image(slices=1)
    result = explain_image(module_model(module), image, methods=["gradcam"], target=1, layer="act2", device="cpu")
    reference = _reference_gradcam(module, sitk.GetArrayFromImage(image)[0], margin=0)
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.maps["gradcam"])[0], reference, atol=1e-5)


def test_a_model_that_ignores_the_border_shows_no_frame(two_torch_threads):
    module = IgnoresTheBorder().eval()
    result = explain_image(_with_background(module), _blob_image(), methods=["gradcam", "gradcampp"], target=1,
                           layer="act2", device="cpu")
    for name, image in result.maps.items():
        heat = sitk.GetArrayFromImage(image)
        far = np.zeros(heat.shape, bool)  # inside the image, away from the edge, the blob and its reach
        far[:, RING + 4:-(RING + 4), RING + 4:-(RING + 4)] = True
        far[:, 18 - 5:22 + 5, 19 - 5:23 + 5] = False
        level = heat[far].max()
        assert heat[:, 18:22, 19:23].max() == pytest.approx(1.0)  # the evidence is the blob
        # before the fix the corners held 1.56 / 1 of the background's level: a frame
        assert heat[_ring(heat.shape)].max() <= level + 1e-5, name


def test_the_map_is_grad_cam_of_the_slice_seen_inside_a_larger_background(two_torch_threads):
    module = IgnoresTheBorder().eval()
    image = _blob_image(slices=1)
    result = explain_image(_with_background(module), image, methods=["gradcam"], target=1, layer="act2", device="cpu")
    reference = _reference_gradcam(module, sitk.GetArrayFromImage(image)[0], margin=16)
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.maps["gradcam"])[0], reference, atol=1e-5)


def test_the_prediction_is_the_models_on_the_slice_itself(two_torch_threads):
    """The margin dilutes a global average pool: the prediction comes from the slice as the card gives it."""
    torch.manual_seed(3)
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    image = _blob_image()
    result = explain_image(_with_background(pooled), image, methods=["gradcam", "saliency"], layer="3", device="cpu")
    with torch.no_grad():
        plain = torch.softmax(pooled(torch.from_numpy(sitk.GetArrayFromImage(image))[:, None]), dim=1).numpy()
    np.testing.assert_allclose(result.prediction, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_the_edge_reaches_as_far_as_the_receptive_field_radius(depth):
    """n stacked 3x3 convolutions with biases: the edge reaches n pixels in (each adds one); a 2x pool
    in front doubles the cell size, and the reach is rounded up to whole cells."""
    torch.manual_seed(depth)

    def network(pool: bool) -> nn.Sequential:
        layers = [nn.Conv2d(1, 2, 1)] + ([nn.MaxPool2d(2)] if pool else [])
        for _ in range(depth):
            layers += [nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()]
        stack = nn.Sequential(*layers)
        with torch.no_grad():  # positive weights and biases: every ReLU passes, the edge travels its full radius
            for module in stack:
                if isinstance(module, nn.Conv2d):
                    nn.init.uniform_(module.weight, 0.1, 0.3)
                    module.bias.fill_(1.0)  # the 1x1 conv's bias: the background is not 0 inside
        return stack

    assert edge_reach(network(False), str(2 * depth), [0.0], (32, 32)) == depth
    assert edge_reach(network(True), str(2 * depth + 1), [0.0], (32, 32)) == 2 * depth


def test_no_margin_where_the_edge_changes_nothing_or_the_network_takes_no_larger_slice():
    # zero padding equals the background at the input and no bias shifts it: nothing to move
    assert edge_reach(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU()), "0", [0.0], (16, 16)) == 0
    fixed = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 16 * 16, 2))
    assert edge_reach(fixed, "0", [0.0], (16, 16)) == 0  # the Linear head needs 16 x 16


def test_pad_slices_surrounds_each_slice_with_the_background_and_crops_back():
    array = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    padded = pad_slices(array, axis=1, margin=2, background=[-1.0, -2.0])
    assert padded.shape == (2, 7, 4, 9)  # axis 1 (the slice axis) keeps its length
    torch.testing.assert_close(padded[crop_index(1, 2, (3, 4, 5), channels=True)], array)
    assert (padded[0, :2] == -1).all() and (padded[1, :, :, -2:] == -2).all()


@pytest.mark.skipif(not (DATA / "lung1_image.nrrd").is_file(),
                    reason="real CT fixture ../shared/data/lung1_image.nrrd is not present")
def test_lung1_has_no_frame_at_the_field_of_view_edge(two_torch_threads):
    """lung-nodule-2d on lung1: slice 30's Grad-CAM maximum was 0.83 at voxel (4, 504), an image corner,
    and the corners stood up to 0.47 (Grad-CAM) / 0.37 (Grad-CAM++) above the map's level in air; now
    the corners are at that level (within 0.013 / 0.009)."""
    image = sitk.ReadImage(str(DATA / "lung1_image.nrrd"))
    hu = sitk.GetArrayFromImage(image)
    away = np.zeros(hu.shape[1:], bool)
    away[48:-48, 48:-48] = True
    result = explain_image("lung-nodule-2d", image, methods=["gradcam", "gradcampp"], device="cpu")
    for name, heat in result.maps.items():
        heat = sitk.GetArrayFromImage(heat)
        for z, slice_ in enumerate(heat):
            corner = max(slice_[:16, :16].max(), slice_[:16, -16:].max(), slice_[-16:, :16].max(),
                         slice_[-16:, -16:].max())
            air = np.percentile(slice_[(hu[z] < -900) & away], 90)  # the map's level where the scan is air
            assert corner <= air + 0.05, (name, z, corner, air)
        peak = np.unravel_index(np.argmax(heat[30]), heat[30].shape)
        assert all(16 <= i < 512 - 16 for i in peak), (name, peak)
