"""Sparseness, complexity and effective complexity: Quantus on 2D maps, closed forms in 3D, the table callers."""
import math

import numpy as np
import pytest
import torch

from XAIExplainLib import evaluation as ev

from Testing.evaluation.metric_models import quantus


def _signed_maps(dims, n=4, size=9, seed=0):
    """Signed maps with a different spread each, scaled to a largest magnitude of 1 (as the engine's)."""
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randn((n,) + (size,) * dims, generator=generator) ** torch.arange(1, n + 1).view(-1, *[1] * dims)
    maps[:, 0] = 0.0  # exact zeros, so effective complexity differs from the voxel count
    return maps / maps.reshape(n, -1).abs().max(dim=1).values.view(-1, *[1] * dims)


def test_complexity_metrics_equal_quantus_2d():
    q = quantus()
    maps = _signed_maps(2)
    arrays = dict(model=None, x_batch=maps[:, None].numpy(), y_batch=np.zeros(4, dtype=int), channel_first=True)
    kwargs = dict(disable_warnings=True, display_progressbar=False)  # Quantus's defaults: abs, normalise by max
    for ours, metric in ((ev.sparseness, q.Sparseness), (ev.complexity, q.Complexity),
                         (ev.effective_complexity, q.EffectiveComplexity)):
        reference = metric(**kwargs)(a_batch=maps[:, None].numpy().copy(), **arrays)
        np.testing.assert_allclose(ours(maps).numpy(), reference, rtol=1e-5, atol=1e-5, err_msg=metric.__name__)
        assert len(set(np.round(reference, 4))) >= 3  # the maps differ, so the comparison can fail
    reference = q.EffectiveComplexity(eps=0.3, **kwargs)(a_batch=maps[:, None].numpy().copy(), **arrays)
    np.testing.assert_array_equal(ev.effective_complexity(maps, eps=0.3).numpy(), reference)


@pytest.mark.parametrize("dims", [2, 3])
def test_complexity_known_answers(dims):
    shape = (6,) * dims
    d = 6 ** dims
    one_hot = torch.zeros((1,) + shape)
    one_hot.view(-1)[5] = -3.0  # one voxel holds everything, whatever its sign
    uniform = torch.full((1,) + shape, 0.5)
    two = torch.zeros((1,) + shape)
    two.view(-1)[:2] = torch.tensor([1.0, 3.0])
    assert ev.sparseness(one_hot).item() == pytest.approx(1 - 1 / d)
    assert ev.sparseness(uniform).item() == pytest.approx(0.0, abs=1e-6)
    # Gini of (0, ..., 0, 1, 3): (2(d-1) - d - 1) * 1 + (2d - d - 1) * 3, over 4 d.
    assert ev.sparseness(two).item() == pytest.approx(((d - 3) + 3 * (d - 1)) / (4 * d))
    assert ev.complexity(one_hot).item() == pytest.approx(0.0, abs=1e-7)
    assert ev.complexity(uniform).item() == pytest.approx(math.log(d))
    assert ev.complexity(two).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert ev.effective_complexity(one_hot).item() == 1
    assert ev.effective_complexity(uniform).item() == d
    assert ev.effective_complexity(two, eps=0.4).item() == 1  # 1/3 of the peak is below 0.4
    zero = torch.zeros((1,) + shape)  # singles nothing out: scored as uniform
    assert (ev.sparseness(zero).item(), ev.complexity(zero).item(), ev.effective_complexity(zero).item()) == \
        (0.0, pytest.approx(math.log(d)), 0.0)
    batch = torch.cat([one_hot, uniform, two])
    assert ev.complexity(batch).tolist() == pytest.approx([ev.complexity(m[None]).item() for m in batch], abs=1e-6)
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\)"):
        ev.effective_complexity(two, eps=1.5)


def test_complexity_metrics_are_map_only_in_evaluate():
    maps = _signed_maps(3, n=2, size=5)
    names = ["sparseness", "complexity", "effective_complexity"]
    assert set(names) <= set(ev.MAP_ONLY_METRICS) and set(names) <= ev.ON_REQUEST
    columns = ev.evaluate(None, None, maps, metrics=names,
                          metric_options={"effective_complexity": {"eps": 0.5}})
    assert columns["sparseness"] == pytest.approx(ev.sparseness(maps).tolist())
    assert columns["complexity"] == pytest.approx(ev.complexity(maps).tolist())
    assert columns["effective_complexity"] == ev.effective_complexity(maps, eps=0.5).tolist()
    assert "sparseness" not in ev.evaluate(None, None, maps, mask=maps > 0)  # only when named
