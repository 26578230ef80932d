"""Independent parameter randomisation and the random-logit test: Quantus (2D), closed forms (3D)."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from XAIExplainLib import evaluation as ev
from XAIExplainLib.engine import SegmentationTarget, explain

from Testing.evaluation.metric_models import WeightMapClassifier, WeightMapSegmenter, quantus, small_cnn
from Testing.support.models import assert_as_found, small_inputs, snapshot, unet


class _FixedReset:
    """reset_parameters gives a fixed pattern: Quantus and this library then draw the same "random" layer."""

    def reset_parameters(self):
        with torch.no_grad():
            for k, param in enumerate(p for p in self.parameters(recurse=False)):
                values = torch.linspace(-1.0, 1.0, param.numel()) * (k + 1)
                param.copy_(values[torch.randperm(param.numel(), generator=torch.Generator().manual_seed(k))]
                            .view_as(param))


class FixedConv(_FixedReset, nn.Conv2d):
    pass


class FixedLinear(_FixedReset, nn.Linear):
    pass


def _fixed_reset_cnn():
    model = nn.Sequential(FixedConv(1, 4, 3, padding=1), nn.ReLU(), FixedConv(4, 5, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), FixedLinear(5, 3))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the "trained" weights: anything but the reset pattern
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


def _quantus_explain(method, layer=None):
    def explain_func(model, inputs, targets, **kwargs):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        maps = explain(model, x, method, target=torch.as_tensor(np.asarray(targets)).long(), layer=layer)
        return maps[:, None].numpy()
    return explain_func


def test_parameter_randomization_equals_quantus_independent_mprt():
    q = quantus()
    model = _fixed_reset_cnn()
    x = torch.randn(3, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    maps = explain(model, x, "gradcam", target=y, layer="2")
    state = snapshot(model)
    ours = ev.parameter_randomization(model, x, "gradcam", target=y, layer="2", maps=maps)
    assert_as_found(model, state)
    assert ours.layers == ["6", "2", "0"]
    metric = q.MPRT(layer_order="independent", similarity_func=q.similarity_func.correlation_spearman, abs=False,
                    normalise=False, return_average_correlation=False, return_last_correlation=False,
                    return_aggregate=False, skip_layers=False, disable_warnings=True, display_progressbar=False)
    model.eval()
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                       explain_func=_quantus_explain("gradcam", "2"), explain_func_kwargs={}, channel_first=True,
                       device="cpu")
    for i, name in enumerate(ours.layers):
        np.testing.assert_allclose(ours.correlation[i].numpy(), reference[name], atol=1e-5)
    assert float(ours.correlation.min()) < 0.9  # some layer mattered


def test_parameter_randomization_restores_each_layer_and_spares_irrelevant_ones():
    """A bias-only layer after the head does not change the gradient: its correlation is exactly 1."""

    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = nn.Parameter(torch.zeros(2))

        def forward(self, z):
            return z + self.offset

    model = nn.Sequential(small_cnn(3, classes=2, seed=3), Shift())
    x = torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(4))
    result = ev.parameter_randomization(model, x, "saliency", target=1)
    assert result.layers[0] == "1"
    assert torch.allclose(result.correlation[0], torch.ones(2), atol=1e-6)
    assert bool((result.correlation[1:] < 0.99).any())
    # Independent: each layer alone. The cascade's last stage randomises all, the independent one only one.
    cascade = ev.sanity_randomization(model, x, "saliency", target=1)
    assert cascade.layers == result.layers
    assert torch.allclose(cascade.correlation[0], result.correlation[0])
    columns = ev.evaluate(model, x, explain(model, x, "saliency", target=1), target=1, method="saliency",
                          metrics=["parameter_randomization"])
    assert columns["parameter_randomization"] == pytest.approx(result.correlation.mean(0).tolist(), abs=1e-6)


def test_random_logit_equals_quantus_random_logit():
    q = quantus()
    model = _fixed_reset_cnn().eval()
    x = torch.randn(4, 1, 10, 10, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 0])
    maps = explain(model, x, "gradcam", target=y, layer="2")
    metric = q.RandomLogit(num_classes=3, seed=42, similarity_func=q.similarity_func.correlation_spearman,
                           abs=False, normalise=False, disable_warnings=True, display_progressbar=False)
    reference = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                       explain_func=_quantus_explain("gradcam", "2"), explain_func_kwargs={}, channel_first=True,
                       device="cpu")
    # Quantus's draw: the np.random.randint(0, K - 1)-th of the classes other than y, after seeding.
    np.random.seed(42)
    draw = np.random.randint(0, 2, 4)
    others = [[c for c in range(3) if c != int(label)][d] for label, d in zip(y, draw)]
    ours = ev.random_logit(model, x, "gradcam", target=y, layer="2", maps=maps, other_classes=others)
    np.testing.assert_allclose(ours.correlation.numpy(), reference, atol=1e-5)


def test_random_logit_known_answers_3d():
    """Saliency of a linear model is |W[k]|: the test's score is the Spearman correlation of |W[c]| and |W[o]|."""
    generator = torch.Generator().manual_seed(6)
    weights = torch.randn(4, 5, 5, 5, generator=generator)
    model = WeightMapClassifier(weights)
    x = torch.randn(3, 1, 5, 5, 5, generator=generator)
    state = snapshot(model)
    result = ev.random_logit(model, x, "saliency", target=[0, 1, 2], seed=7, normalize=False)
    assert_as_found(model, state)
    assert bool((result.other_classes != result.classes).all())
    for n in range(3):
        c, o = int(result.classes[n]), int(result.other_classes[n])
        expected = spearmanr(weights[c].abs().flatten().numpy(), weights[o].abs().flatten().numpy())[0]
        assert result.correlation[n].item() == pytest.approx(expected, abs=1e-6)
    draws = [ev.random_logit(model, x[:1], "saliency", target=2, seed=s).other_classes.item() for s in range(30)]
    assert set(draws) == {0, 1, 3}
    # Segmentation: the other class is explained over the same frozen region.
    segmenter = WeightMapSegmenter(weights)
    region = torch.zeros(5, 5, 5, dtype=torch.bool)
    region[1:4, 1:4] = True
    seg = ev.random_logit(segmenter, x[:1].abs() + 0.1, "saliency", target=SegmentationTarget(0, region=region),
                          other_classes=[3], normalize=False)
    expected = spearmanr((weights[0].abs() * region).flatten().numpy(),
                         (weights[3].abs() * region).flatten().numpy())[0]
    assert seg.correlation.item() == pytest.approx(expected, abs=1e-6)
    columns = ev.evaluate(model, x, explain(model, x, "saliency", target=[0, 1, 2]), target=[0, 1, 2],
                          method="saliency", metrics=["random_logit"], seed=7)
    normalised = ev.random_logit(model, x, "saliency", target=[0, 1, 2], seed=7)
    assert columns["random_logit"] == pytest.approx(normalised.correlation.tolist(), abs=1e-6)


def test_random_logit_errors():
    model = WeightMapClassifier(torch.randn(3, 4, 4))
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"other_classes equals the explained class for sample\(s\) \[1\]"):
        ev.random_logit(model, x, "saliency", target=[0, 1], other_classes=[2, 1])
    with pytest.raises(ValueError, match=r"other_classes must lie in 0..2"):
        ev.random_logit(model, x, "saliency", target=[0, 1], other_classes=[2, 5])
    with pytest.raises(ValueError, match="at least two output classes; this one has 1"):
        ev.random_logit(WeightMapClassifier(torch.randn(1, 4, 4)), x, "saliency")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ev.random_logit(model, x.numpy(), "saliency")


def test_parameter_randomization_of_a_segmenter_restores_every_layer_3d():
    """Each independent stage equals a one-layer cascade: nothing of the previous layers' draws is left over."""
    model = unet(3, seed=2).train()  # batch norm in training mode: its statistics and flag must survive
    x = small_inputs(3, n=2, seed=3)
    target = SegmentationTarget(1, region="all")
    before = snapshot(model)
    result = ev.parameter_randomization(model, x, "gradcam", target=target, layer="dec1.0")
    assert_as_found(model, before)
    assert result.layers[0] == "head" and "dec2.1" in result.layers and result.layers[-1] == "enc1.conv"
    for name in ("dec2.1", "enc2", "enc1.conv"):
        alone = ev.sanity_randomization(model, x, "gradcam", target=target, layer="dec1.0", layers=[name])
        i = result.layers.index(name)
        assert torch.allclose(result.correlation[i], alone.correlation[0], atol=1e-6), name
    assert bool((result.correlation.abs() <= 1).all()) and bool((result.correlation < 0.999).any())
