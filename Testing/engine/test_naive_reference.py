"""Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM and CAM against naive per-sample, per-channel loops."""
import pytest
import torch
import torch.nn.functional as F

import XAIExplainLib as xai
from Testing.support.models import SmallCNN, inputs, make

MODES = {2: "bilinear", 3: "trilinear"}


def _activation_and_gradient(model, x, layer, cls):
    """Plain autograd with a stored activation, one sample at a time (no engine code)."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        out = model(x)
        store["a"].retain_grad()
        out[0, cls].backward()
    finally:
        handle.remove()
    model.zero_grad()
    return store["a"][0].detach(), store["a"].grad[0].detach()


def _naive(method, a, g, fc_weight=None, cls=None):
    channels = a.shape[0]
    total = torch.zeros(a.shape[1:], dtype=torch.float64)
    a, g = a.double(), g.double()
    for k in range(channels):
        ak, gk = a[k], g[k]
        if method == "gradcampp":
            denom = 2 * gk ** 2 + ak.sum() * gk ** 3
            alpha = torch.zeros_like(gk)
            nz = denom != 0
            alpha[nz] = gk[nz] ** 2 / denom[nz]
            total += (alpha * gk.clamp(min=0)).sum() * ak
        elif method == "hirescam":
            total += gk * ak
        elif method == "xgradcam":
            weight = (ak / ak.sum() * gk).sum() if ak.sum() != 0 else 0.0
            total += weight * ak
        elif method == "layercam":
            total += gk.clamp(min=0) * ak
        elif method == "cam":
            total += fc_weight[cls, k].double() * ak
    return total if method == "cam" else total.clamp(min=0)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", ["gradcampp", "hirescam", "xgradcam", "layercam", "cam"])
def test_cam_variants_match_naive_reference(dims, method):
    model = make(SmallCNN, dims=dims, seed=3)
    x = inputs(dims, n=3, size=12 if dims == 2 else 8, seed=5)
    layer_name = "features.6" if method == "cam" else "features.3"
    ours = xai.explain(model, x, method, layer=layer_name, normalize=False)
    layer = dict(model.named_modules())[layer_name]
    classes = model(x).argmax(1)
    for n in range(x.shape[0]):
        cls = int(classes[n])
        a, g = _activation_and_gradient(model, x[n:n + 1], layer, cls)
        reference = _naive(method, a, g, model.fc.weight.detach(), cls)
        reference = F.interpolate(reference[None, None].float(), size=x.shape[2:], mode=MODES[dims],
                                  align_corners=False)[0, 0]
        assert reference.abs().max() > 0
        assert torch.allclose(ours[n], reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))


def test_cam_refuses_a_layer_that_does_not_feed_the_head():
    model = make(SmallCNN)
    with pytest.raises(ValueError, match="global average pool"):
        xai.explain(model, inputs(), "cam", layer="features.0")
