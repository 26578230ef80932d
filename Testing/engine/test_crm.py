"""CRM (Kim, Rajaraman, Antani 2019): closed form, literal forward mode, class-only variant, ROI maps."""
import pytest
import torch

import XAIExplainLib as xai
from Testing.support.models import TinyClassifier, classifier, small_inputs as inputs, make, unet


def _unstrided(dims, classes=4, seed=0):
    """A GAP classifier whose last conv map has the input's resolution (no upsampling between maps)."""
    model = make(TinyClassifier, seed=seed, dims=dims, classes=classes)
    model.features[2].stride = (1,) * dims
    return model


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("dims", [2, 3])
def test_closed_form_equals_forward_mode_and_the_sum_of_squared_cams(dims):
    model = _unstrided(dims)
    x = inputs(dims, n=3)
    closed = xai.explain(model, x, "crm", layer="features.3", normalize=False)
    forward = xai.explain(model, x, "crm", layer="features.3", normalize=False, crm_mode="forward")
    assert _rel(forward, closed) < 1e-5
    cams = [xai.explain(model, x, "cam", target=c, layer="features.3", normalize=False) for c in range(4)]
    assert _rel(closed, sum(cam.pow(2) for cam in cams)) < 1e-5
    only = xai.explain(model, x, "crm", target=2, layer="features.3", normalize=False, crm_classes="target")
    assert _rel(only, cams[2].pow(2)) < 1e-5
    only_forward = xai.explain(model, x, "crm", target=2, layer="features.3", normalize=False,
                               crm_mode="forward", crm_classes="target")
    assert _rel(only_forward, only) < 1e-5


def test_forward_softmax_mode_is_the_literal_removal_through_softmax():
    model = _unstrided(2, seed=3)
    x = inputs(2, n=2, size=6)
    ours = xai.explain(model, x, "crm", layer="features.3", normalize=False, crm_mode="forward_softmax")
    model, x = model.double(), x.double()  # the reference in float64: no cancellation in base - scores
    with torch.no_grad():
        features = model.features(x)
        base = torch.softmax(model(x), dim=1)
        expected = torch.zeros(2, 6, 6, dtype=torch.float64)
        for i in range(6):
            for j in range(6):
                removed = features.clone()
                removed[:, :, i, j] = 0
                scores = torch.softmax(model.fc(model.pool(removed).flatten(1)), dim=1)
                expected[:, i, j] = (base - scores).pow(2).sum(dim=1)
    assert _rel(ours.double(), expected) < 1e-5


def test_crm_is_upsampled_to_the_input_and_refuses_what_it_cannot_explain():
    model = classifier(2)
    x = inputs(2)
    assert xai.explain(model, x, "crm", layer="features.3").shape == (2, 16, 16)
    with pytest.raises(ValueError, match="global average pool"):
        xai.explain(model, x, "crm", layer="features.1")
    with pytest.raises(ValueError, match="classification"):
        xai.explain(unet(2), x, "crm", target=1, layer="dec1.0")
    with pytest.raises(ValueError, match="crm_mode must be one of"):
        xai.explain(model, x, "crm", crm_mode="literal")


def test_class_roi_map_is_the_mean_of_max_normalised_crm():
    model = classifier(2, seed=5)
    x = inputs(2, n=5, seed=9)
    roi = xai.engine.crm_roi_map(model, x, layer="features.3", batch_size=2)
    raw = xai.explain(model, x, "crm", layer="features.3", normalize=False)
    expected = (raw / raw.flatten(1).amax(1)[:, None, None]).mean(dim=0)
    assert roi.shape == (16, 16) and torch.allclose(roi, expected, atol=1e-6)
    batches = [x[:3], x[3:]]
    assert torch.allclose(xai.engine.crm_roi_map(model, batches, layer="features.3"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        xai.engine.crm_roi_map(model, [], layer="features.3")
