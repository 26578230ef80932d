"""explain_volume: slices equal per-slice explain, sliding windows without seams, progress and cancel."""
import numpy as np
import pytest
import torch

import XAIExplainLib as xai
from XAIExplainLib.engine.volume import _Batches
from Testing.support.models import MeanPooledFCN, SmallCNN, make, pearson


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.normal(size=(9, 12, 14)).astype(np.float32)


# One-layer CAM maps are resized once per volume, the others per batch; a layer list
# (multi-layer average) is resized per batch too. All must equal per-slice explain.
METHOD_SETS = {
    "gradcam+saliency": (["gradcam", "saliency"], None),
    "every one-layer CAM with full-size methods": (
        ["cam", "gradcam", "gradcampp", "hirescam", "xgradcam", "layercam", "guided_gradcam", "saliency"], None),
    "layer list": (["gradcam", "layercam"], ["features.2", "features.6"]),
}


@pytest.mark.parametrize("methods", METHOD_SETS)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_mode_equals_stacked_per_slice_explain(volume, axis, methods):
    methods, layer = METHOD_SETS[methods]
    model = make(SmallCNN)
    got = xai.explain_volume(model, volume, methods, axis=axis, batch_size=4, normalize=False, layer=layer)
    slices = torch.from_numpy(np.moveaxis(volume, axis, 0)).unsqueeze(1)
    for method in methods:
        expected = torch.cat([xai.explain(model, slices[i:i + 1], method, normalize=False, layer=layer)
                              for i in range(slices.shape[0])])
        expected = np.moveaxis(expected.numpy(), 0, axis)
        assert got[method].shape == volume.shape
        np.testing.assert_allclose(got[method], expected, rtol=1e-4, atol=1e-6)


def test_slices_mode_normalises_over_the_whole_volume(volume):
    model = make(SmallCNN)
    volume = volume.copy()
    volume[3] = 0.0  # an empty slice must stay dark relative to the others
    raw = xai.explain_volume(model, volume, "gradcam", normalize=False)
    norm = xai.explain_volume(model, volume, "gradcam")
    assert norm.max() == pytest.approx(1.0) and norm.min() >= 0
    np.testing.assert_allclose(norm, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    per_slice_max = norm.reshape(norm.shape[0], -1).max(axis=1)
    assert per_slice_max.min() < 1.0  # not stretched slice by slice


def test_per_slice_targets_and_length_check(volume):
    model = make(SmallCNN)
    targets = [0, 1, 2] * 3
    got = xai.explain_volume(model, volume, "gradcam", target=targets, batch_size=4, normalize=False)
    one = xai.explain(model, torch.from_numpy(volume[5:6])[:, None], "gradcam", target=targets[5], normalize=False)
    np.testing.assert_allclose(got[5], one[0].numpy(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="got 2 targets for a batch of 4"):
        xai.explain_volume(model, volume, "gradcam", target=[0, 1], batch_size=4)


def test_sliding_windows_have_no_seams():
    torch.manual_seed(0)
    model = make(MeanPooledFCN)
    z, y, x = np.mgrid[0:28, 0:30, 0:26].astype(np.float32)
    volume = np.sin(z / 4) + np.cos(y / 5) + 0.5 * np.sin(x / 3)  # smooth, structured input
    whole = xai.explain_volume(model, volume, "hirescam", mode="volume", target=1, layer="body.2")
    patched = xai.explain_volume(model, volume, "hirescam", mode="volume", patch_size=16, overlap=0.5, target=1,
                                 layer="body.2", batch_size=3)
    assert patched.shape == volume.shape
    assert pearson(torch.from_numpy(whole), torch.from_numpy(patched)) > 0.999
    # no seams: the difference along a window border plane is no larger than elsewhere
    diff = np.abs(whole - patched)
    assert diff.max() < 0.05


def test_volume_mode_whole_volume_equals_explain(volume):
    model = make(SmallCNN, dims=3)
    got = xai.explain_volume(model, volume, "gradcam", mode="volume", normalize=False)
    expected = xai.explain(model, torch.from_numpy(volume)[None, None], "gradcam", normalize=False)[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_progress_is_reported_and_raising_cancels_cleanly(volume):
    model = make(SmallCNN)
    model.train()
    seen = []
    xai.explain_volume(model, volume, "gradcam", batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 9), (8, 9), (9, 9)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled()
    with pytest.raises(Cancelled):
        xai.explain_volume(model, volume, "gradcam", batch_size=4, progress=cancel)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_out_of_memory_halves_the_batch_and_retries():
    calls = []

    def work(start, stop):
        calls.append((start, stop))
        if stop - start > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    batches = _Batches(5, 8, torch.device("cuda"), None)
    torch_cuda_empty = torch.cuda.empty_cache
    torch.cuda.empty_cache = lambda: None  # no GPU here: the halving logic is what is tested
    try:
        batches.run(work)
    finally:
        torch.cuda.empty_cache = torch_cuda_empty
    assert calls == [(0, 5), (0, 4), (0, 2), (2, 4), (4, 5)]
    with pytest.raises(torch.OutOfMemoryError):
        _Batches(1, 1, torch.device("cuda"), None).run(lambda a, b: (_ for _ in ()).throw(
            torch.OutOfMemoryError("CUDA out of memory")))


def test_predict_volume_shapes(volume):
    clf = make(SmallCNN)
    assert xai.predict_volume(clf, volume, axis=2).shape == (14, 3)
    seg = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    assert xai.predict_volume(seg, volume, axis=1).shape == (2,) + volume.shape
    seg3 = torch.nn.Conv3d(1, 2, 1).eval()  # pointwise: windows must reproduce the whole volume exactly
    whole = xai.predict_volume(seg3, volume, mode="volume")
    windows = xai.predict_volume(seg3, volume, mode="volume", patch_size=6, overlap=0.5)
    assert whole.shape == windows.shape == (2,) + volume.shape
    np.testing.assert_allclose(whole, windows, rtol=1e-5, atol=1e-6)


def test_memory_budget_sets_the_batch_and_refuses_an_impossible_budget(volume):
    model = make(SmallCNN)
    sizes = []
    xai.explain_volume(model, volume, "gradcam", memory_budget_mb=0.15,
                       progress=lambda done, total: sizes.append(done))
    steps = np.diff([0] + sizes)
    assert 1 <= steps.max() < 9  # batched, but fewer slices per batch than the whole volume
    roomy = []
    xai.explain_volume(model, volume, "gradcam", memory_budget_mb=500, progress=lambda d, t: roomy.append(d))
    assert roomy == [9]
    with pytest.raises(ValueError, match=r"memory_budget_mb=0.01 is too small: this volume needs at least"):
        xai.explain_volume(model, volume, "gradcam", memory_budget_mb=0.01)


@pytest.mark.parametrize("target", [None, 1])
def test_segmenter_over_slices_with_a_plain_target_keeps_empty_slices_dark(target):
    """A class absent from some slices gives those slices a zero map, not an error."""
    torch.manual_seed(0)
    segmenter = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(4, 2, 1)).eval()
    with torch.no_grad():  # class 1 wherever the input is bright
        segmenter[0].weight.zero_(); segmenter[0].bias.zero_(); segmenter[0].weight[:, 0, 1, 1] = 1
        segmenter[2].weight.zero_(); segmenter[2].bias.copy_(torch.tensor([0.5, 0.0]))
        segmenter[2].weight[1] = 1
    volume = np.zeros((6, 10, 10), np.float32)
    volume[2:4, 3:6, 3:6] = 2.0
    maps = xai.explain_volume(segmenter, volume, "gradcam", target=target, layer="1", batch_size=6)
    assert maps[2:4].max() > 0.5
    assert np.count_nonzero(maps[[0, 1, 4, 5]]) == 0


def _small_unet3d():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, 2, 1)).eval()


@pytest.mark.parametrize("case", ["2d classifier", "2d segmenter", "3d windows", "3d classifier"])
def test_outputs_from_the_explaining_pass_equal_predict_volume(volume, case):
    """One pass gives prediction and maps: the outputs equal a separate predict_volume."""
    if case == "2d classifier":
        model, kwargs, layer = make(SmallCNN), {"axis": 1}, None
    elif case == "2d segmenter":
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(4, 3, 1)).eval()
        kwargs, layer = {"axis": 2, "batch_size": 4}, "1"
    elif case == "3d windows":
        model, kwargs, layer = _small_unet3d(), {"mode": "volume", "patch_size": 8, "overlap": 0.5}, "3"
    else:
        model, kwargs, layer = make(SmallCNN, dims=3), {"mode": "volume"}, None
    maps, outputs = xai.explain_volume(model, volume, ["gradcam", "saliency"], layer=layer, return_outputs=True,
                                       **kwargs)
    expected = xai.predict_volume(model, volume, **kwargs)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    alone = xai.explain_volume(model, volume, ["gradcam", "saliency"], layer=layer, **kwargs)
    for name in alone:
        np.testing.assert_array_equal(maps[name], alone[name])


def test_predict_volume_leaves_every_submodule_training_flag_as_found(volume):
    """A user model with frozen batch norm (BN in eval inside a training model) comes back unchanged."""
    model = make(SmallCNN).train()
    model.features[1].eval()  # frozen BN statistics
    dropout_like = [m.training for m in model.modules()]
    xai.predict_volume(model, volume, axis=0)
    assert [m.training for m in model.modules()] == dropout_like
    xai.explain_volume(model, volume, "gradcam", axis=0)
    assert [m.training for m in model.modules()] == dropout_like


@pytest.mark.parametrize("mirror_axes", [(), (0, 2)])
def test_windowed_maps_and_outputs_equal_a_naive_window_by_window_blend(volume, mirror_axes):
    """Sliding windows against the blend written out here: each window explained (and, mirrored,
    explained in its mirrored frame and mirrored back) on its own, its map and its logits weighted
    by the Gaussian and divided by the summed weights. The engine adds the weights up once for
    the maps and the outputs, in batches."""
    from itertools import combinations

    from XAIExplainLib.engine.windows import gaussian_weights, window_grid

    model, patch = _small_unet3d(), (8, 8, 8)
    maps, outputs = xai.explain_volume(model, volume, ["gradcam", "saliency"], mode="volume", patch_size=8,
                                       overlap=0.5, target=1, layer="3", batch_size=3, normalize=False,
                                       return_outputs=True, mirror_axes=mirror_axes)
    data = torch.from_numpy(volume)[None, None]
    weights = gaussian_weights(patch, "cpu")
    flips = [c for n in range(1, len(mirror_axes) + 1) for c in combinations(mirror_axes, n)]
    target = xai.SegmentationTarget(1)._replace(allow_empty=True)
    sums = {name: torch.zeros(volume.shape) for name in maps}
    logits, total = torch.zeros((2,) + volume.shape), torch.zeros(volume.shape)
    for window in window_grid(volume.shape, patch, 0.5):
        x = data[(slice(None), slice(None)) + window]
        with torch.no_grad():
            out = model(x)[0] + sum(torch.flip(model(torch.flip(x, [a + 2 for a in axes]))[0], [a + 1 for a in axes])
                                    for axes in flips)
        logits[(slice(None),) + window] += out / (len(flips) + 1) * weights
        total[window] += weights
        for name in maps:
            own = xai.explain(model, x, name, target=target, layer="3", normalize=False)[0]
            for axes in flips:
                mirrored = xai.explain(model, torch.flip(x, [a + 2 for a in axes]), name, target=target, layer="3",
                                       normalize=False)[0]
                own = own + torch.flip(mirrored, list(axes))
            sums[name][window] += own * (weights / (len(flips) + 1))
    np.testing.assert_allclose(outputs, (logits / total).numpy(), rtol=1e-5, atol=1e-6)
    for name in maps:
        assert np.abs(maps[name]).max() > 0
        np.testing.assert_allclose(maps[name], (sums[name] / total).numpy(), rtol=1e-5, atol=1e-7)
