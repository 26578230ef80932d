"""Eigen-CAM, Eigen-Grad-CAM, Ablation-CAM and FullGrad against naive implementations and pytorch-grad-cam.

The naive references write out the quantity pytorch-grad-cam computes: the principal
component by numpy's SVD, one full forward per ablated channel, and FullGrad's
per-channel min-max / resize / sum on hooks of every biased layer. The pytorch-grad-cam
comparisons run where that package imports (it needs torchvision).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import XAIExplainLib as xai
from Testing.support.models import SmallCNN, inputs, make, pearson, unet
from XAIExplainLib.engine.api import explain_batch

MODES = {2: "bilinear", 3: "trilinear"}


def _resize(maps, size):
    return F.interpolate(maps[:, None], size=size, mode=MODES[len(size)], align_corners=False)[:, 0]


def _capture(model, layer_name, x, backward_target=None):
    """(activation, gradient of the summed target logits or None) of one layer, by plain hooks."""
    store = {}
    layer = dict(model.named_modules())[layer_name]

    def hook(module, args, output):
        store["a"] = output
        if output.requires_grad:
            output.register_hook(lambda g: store.__setitem__("g", g))
    handle = layer.register_forward_hook(hook)
    try:
        if backward_target is None:
            with torch.no_grad():
                out = model(x)
        else:
            out = model(x.clone().requires_grad_(True))
            out.gather(1, backward_target[:, None]).sum().backward()
    finally:
        handle.remove()
    return store["a"].detach(), store.get("g"), out


def naive_eigen(features, size):
    """The principal-component map by numpy's SVD, sign-matched to the channel-mean map, ReLU, resized."""
    maps = []
    for sample in features.double().numpy():
        k = sample.shape[0]
        points = sample.reshape(k, -1).T  # (S, K)
        centred = points - points.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        if np.corrcoef(projection, sample.mean(axis=0).ravel())[0, 1] < 0:
            projection = -projection
        maps.append(np.maximum(projection, 0).reshape(sample.shape[1:]))
    return _resize(torch.tensor(np.stack(maps), dtype=torch.float32), size)


def _close(ours, reference, rtol=1e-4):
    for sample in range(reference.shape[0]):
        assert reference[sample].abs().max() > 0, "an empty reference proves nothing"
    assert torch.allclose(ours, reference, rtol=rtol, atol=rtol * float(reference.abs().max()))


@pytest.mark.parametrize("dims, width, size", [(2, 8, 16), (3, 8, 10), (2, 32, 8)])  # last: fewer positions
def test_eigencam_is_the_first_principal_component_of_the_activations(dims, width, size):  # than channels
    model = make(SmallCNN, dims=dims, width=width)
    x = inputs(dims, size=size)
    activation, _, _ = _capture(model, "features.3", x)
    ours = xai.explain(model, x, "eigencam", layer="features.3", normalize=False)
    _close(ours, naive_eigen(activation, tuple(x.shape[2:])))


def test_eigencam_runs_no_backward_pass():
    model = make(SmallCNN, dims=2)
    x = inputs(2, size=16)
    calls = []
    handle = model.features[0].register_full_backward_hook(lambda *args: calls.append(1))
    try:
        xai.explain(model, x, "eigencam", layer="features.3")
    finally:
        handle.remove()
    assert calls == []


def _later_calls(model):
    """Counts forwards of the layers after features.3 (the head)."""
    calls = []
    handle = model.fc.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_eigencam_alone_stops_the_forward_after_its_layer():
    model = make(SmallCNN, dims=2)
    x = inputs(2, size=16)
    activation, _, _ = _capture(model, "features.3", x)
    calls, handle = _later_calls(model)
    try:
        ours = xai.explain(model, x, "eigencam", layer="features.3", normalize=False)
    finally:
        handle.remove()
    assert calls == []
    _close(ours, naive_eigen(activation, tuple(x.shape[2:])))


def test_eigencam_runs_the_whole_forward_when_the_output_is_read():
    """With another method or the prediction asked for, the output comes from the same pass."""
    model = make(SmallCNN, dims=2)
    x = inputs(2, size=16)
    calls, handle = _later_calls(model)
    try:
        maps, info = explain_batch(model, x, ["eigencam"], layer="features.3", return_info=True,
                                   with_output=True)
        assert len(calls) == 1
        with torch.no_grad():
            assert torch.allclose(info["output"], model(x))
        calls.clear()
        both = xai.explain_many(model, x, ["eigencam", "gradcam"], layer="features.3")
        assert len(calls) == 1   # one shared pass ran to the output
    finally:
        handle.remove()
    assert torch.allclose(both["eigencam"], maps["eigencam"])


def _sklearn_kpca(activation, kernel, gamma=None):
    """scikit-learn's KernelPCA(n_components=1) per sample on the centred positions x channels points."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    out = []
    for sample in activation.double().numpy():
        points = sample.reshape(sample.shape[0], -1).T
        points = points - points.mean(axis=0)
        projection = decomposition.KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(points)[:, 0]
        out.append(torch.from_numpy(projection).reshape(sample.shape[1:]))
    return torch.stack(out)


@pytest.mark.parametrize("dims, kernel, gamma", [(2, "sigmoid", None), (2, "rbf", 0.05), (3, "poly", None),
                                                 (3, "cosine", None)])
def test_kpcacam_is_scikit_learns_first_kernel_principal_component(dims, kernel, gamma):
    """Our projection equals KernelPCA's up to the sign of the eigenvector; the map is its ReLU with
    the sign that correlates with the channel-mean map (Eigen-CAM's rule)."""
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=16 if dims == 2 else 10)
    activation, _, _ = _capture(model, "features.3", x)
    ours = xai.explain(model, x, "kpcacam", layer="features.3", normalize=False, kernel=kernel, gamma=gamma)
    reference = _sklearn_kpca(activation, kernel, gamma).float()
    mean_map = activation.mean(dim=1)
    for sample in range(x.shape[0]):
        projection = reference[sample]
        centred = mean_map[sample] - mean_map[sample].mean()
        if (projection * centred).sum() < 0:
            projection = -projection
        expected = _resize(torch.relu(projection)[None], tuple(x.shape[2:]))
        _close(ours[sample:sample + 1], expected)


def test_kpcacam_with_a_linear_kernel_is_eigencam():
    model = make(SmallCNN, dims=2)
    x = inputs(2, size=16)
    linear = xai.explain(model, x, "kpcacam", layer="features.3", normalize=False, kernel="linear")
    _close(linear, xai.explain(model, x, "eigencam", layer="features.3", normalize=False))


def test_kpcacam_refuses_a_layer_with_too_many_positions_and_bad_options():
    model = make(SmallCNN, dims=2)
    x = inputs(2, n=1, size=72)   # features.0: 72 x 72 = 5184 positions
    with pytest.raises(ValueError, match=r"5184 positions \(72 x 72\).*choose a deeper.*eigencam"):
        xai.explain(model, x, "kpcacam", layer="features.0")
    xai.explain(model, x, "kpcacam", layer="features.3")   # 36 x 36 after the stride: accepted
    with pytest.raises(ValueError, match="option kernel must be one of"):
        xai.explain(model, x, "kpcacam", layer="features.3", kernel="laplacian")
    with pytest.raises(ValueError, match="option gamma"):
        xai.explain(model, x, "kpcacam", layer="features.3", gamma=-1.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_eigengradcam_is_the_principal_component_of_activations_times_gradients(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=16 if dims == 2 else 10)
    target = torch.tensor([0, 1, 2, 1])
    activation, gradient, _ = _capture(model, "features.3", x, backward_target=target)
    ours = xai.explain(model, x, "eigengradcam", target=target, layer="features.3", normalize=False)
    _close(ours, naive_eigen(activation * gradient, tuple(x.shape[2:])))


def naive_ablation(model, x, layer_name, score):
    """w_k = (y - y_k) / y with one full forward per zeroed channel; ReLU(sum_k w_k A_k), resized."""
    layer = dict(model.named_modules())[layer_name]
    activation, _, out = _capture(model, layer_name, x)
    base = score(out)
    weights = torch.zeros(activation.shape[:2])
    for k in range(activation.shape[1]):
        def zero(module, args, output, k=k):
            output = output.clone()
            output[:, k] = 0
            return output
        handle = layer.register_forward_hook(zero)
        try:
            with torch.no_grad():
                weights[:, k] = (base - score(model(x))) / base
        finally:
            handle.remove()
    shape = weights.shape + (1,) * (activation.dim() - 2)
    return _resize(torch.relu((weights.reshape(shape) * activation).sum(dim=1)), tuple(x.shape[2:]))


@pytest.mark.parametrize("dims", [2, 3])
def test_ablationcam_equals_one_forward_per_zeroed_channel_on_a_classifier(dims, monkeypatch):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=16 if dims == 2 else 10)
    target = torch.tensor([2, 0, 1, 2])
    reference = naive_ablation(model, x, "features.6", lambda out: out.gather(1, target[:, None])[:, 0])
    _close(xai.explain(model, x, "ablationcam", target=target, layer="features.6", normalize=False), reference)
    from XAIExplainLib.engine import batching  # several suffix batches give the same map
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 4 * x[0].numel() * 3)
    _close(xai.explain(model, x, "ablationcam", target=target, layer="features.6", normalize=False), reference)


def test_ablationcam_on_a_unet_decoder_layer_with_skips():
    model = unet(2, seed=2)
    x = inputs(2, n=2, seed=4)
    target = xai.SegmentationTarget(1, region="all")
    reference = naive_ablation(model, x, "dec2.0", lambda out: out[:, 1].flatten(1).sum(1))
    _close(xai.explain(model, x, "ablationcam", target=target, layer="dec2.0", normalize=False), reference)


def _minmax(maps, eps=1e-30):
    flat = maps.flatten(1)
    low = flat.min(1, keepdim=True).values
    return ((flat - low) / (eps + (flat - low).max(1, keepdim=True).values)).reshape(maps.shape)


def naive_fullgrad(model, x, target, layer_types, eps=1e-30):
    """pytorch-grad-cam's FullGrad: |x g_x| and |b g_z| per biased layer, min-max per channel, resized, summed.

    pytorch-grad-cam divides by (range + 1e-7) where the engine divides by the range itself;
    ``eps`` chooses which.
    """
    store, handles = [], []
    for module in model.modules():
        if type(module) in layer_types and module.bias is not None:
            def hook(m, args, output):
                if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                    bias = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
                else:
                    bias = m.bias
                entry = {"b": bias.detach()}
                store.append(entry)
                output.register_hook(lambda g: entry.__setitem__("g", g))
            handles.append(module.register_forward_hook(hook))
    inp = x.clone().requires_grad_(True)
    try:
        out = model(inp)
        out.gather(1, target[:, None]).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    size = tuple(x.shape[2:])
    total = _minmax((inp.grad * x).abs().flatten(0, 1), eps).reshape(x.shape).sum(1)
    for entry in store:
        g = entry["g"]
        pieces = (entry["b"].reshape((1, -1) + (1,) * (g.dim() - 2)) * g).abs()
        scaled = _resize(_minmax(pieces.flatten(0, 1), eps), size).reshape(pieces.shape[:2] + size)
        total = total + scaled.sum(1)
    return _minmax(total)


@pytest.mark.parametrize("dims", [2, 3])
def test_fullgrad_equals_the_biased_layer_sum_of_pytorch_grad_cam(dims):
    model = make(SmallCNN, dims=dims, in_channels=2)
    x = inputs(dims, channels=2, size=16 if dims == 2 else 10)
    target = torch.tensor([1, 1, 0, 2])
    types = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    reference = naive_fullgrad(model, x, target, types)
    ours = xai.explain(model, x, "fullgrad", target=target)
    _close(ours, reference, rtol=1e-4)
    with_library_epsilon = naive_fullgrad(model, x, target, types, eps=1e-7)
    assert min(pearson(ours[i], with_library_epsilon[i]) for i in range(x.shape[0])) >= 0.99


def _grad_cam_reference(cls, model, x, target, layers):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cam = cls(model=model, target_layers=layers)
    return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in target]))


def test_kpcacam_matches_pytorch_grad_cam():
    """pytorch-grad-cam keeps scikit-learn's eigenvector sign; where it agrees with ours (the one that
    correlates with the channel-mean map) the maps must agree."""
    from_library = pytest.importorskip("pytorch_grad_cam")
    model = make(SmallCNN, dims=2, width=16)
    x = inputs(2, size=32)
    target = torch.tensor([0, 1, 2, 0])
    reference = _grad_cam_reference(from_library.KPCA_CAM, model, x, target, [model.features[6]])
    ours = xai.explain(model, x, "kpcacam", layer="features.6")
    activation, _, _ = _capture(model, "features.6", x)
    projection, mean_map = _sklearn_kpca(activation, "sigmoid"), activation.mean(dim=1).double()
    agreeing = [i for i in range(x.shape[0])
                if (projection[i] * (mean_map[i] - mean_map[i].mean())).sum() >= 0]
    assert agreeing, "no sample has scikit-learn's sign: the comparison would prove nothing"
    for sample in agreeing:
        assert reference[sample].max() > 0
        assert pearson(ours[sample], reference[sample]) >= 0.99


@pytest.mark.parametrize("library_name, method, target, layer", [
    ("AblationCAM", "ablationcam", [0, 1, 2, 0], 6),
    ("FullGrad", "fullgrad", [2, 1, 0, 0], None),
    ("GradCAMElementWise", "gradcam_elementwise", [1, 2, 0, 1], 3),
])
def test_method_matches_pytorch_grad_cam(library_name, method, target, layer):
    from_library = pytest.importorskip("pytorch_grad_cam")
    model = make(SmallCNN, dims=2, width=16)
    x = inputs(2, size=32)
    target = torch.tensor(target)
    layers = [] if layer is None else [model.features[layer]]
    reference = _grad_cam_reference(getattr(from_library, library_name), model, x, target, layers)
    ours = xai.explain(model, x, method, target=target, layer=None if layer is None else f"features.{layer}")
    for sample in range(x.shape[0]):
        assert reference[sample].max() > 0
        assert pearson(ours[sample], reference[sample]) >= 0.99


def naive_finercam(model, x, layer_name, alpha, comparisons):
    """Grad-CAM of sum_t p_t (y_c - alpha y_t) / sum_t p_t, c the predicted class, t the closest logits."""
    layer = dict(model.named_modules())[layer_name]
    store = {}

    def hook(module, args, output):
        store["a"] = output
        output.register_hook(lambda g: store.__setitem__("g", g))
    handle = layer.register_forward_hook(hook)
    try:
        out = model(x.clone().requires_grad_(True))
        logits = out.detach()
        main = logits.argmax(1)
        order = (logits - logits.gather(1, main[:, None])).abs().argsort(1)[:, 1:1 + comparisons]
        score = 0
        for i in range(x.shape[0]):
            p = torch.softmax(out[i], 0)[order[i]]
            score = score + (p * (out[i, main[i]] - alpha * out[i, order[i]])).sum() / (p.sum() + 1e-9)
        score.backward()
    finally:
        handle.remove()
    a, g = store["a"].detach(), store["g"]
    weights = g.mean(dim=tuple(range(2, g.dim())))
    shape = weights.shape + (1,) * (a.dim() - 2)
    return _resize(torch.relu((weights.reshape(shape) * a).sum(1)), tuple(x.shape[2:])), order


@pytest.mark.parametrize("dims", [2, 3])
def test_finercam_is_gradcam_of_the_margin_over_the_closest_classes(dims):
    model = make(SmallCNN, dims=dims, classes=6)
    x = inputs(dims, size=16 if dims == 2 else 10)
    reference, order = naive_finercam(model, x, "features.3", 0.6, 3)
    ours, info = xai.explain(model, x, "finercam", layer="features.3", normalize=False, alpha=0.6,
                             return_info=True)
    assert torch.equal(info["finercam"]["comparison_classes"], order)
    _close(ours, reference)


def test_finercam_refuses_segmentation_outputs():
    with pytest.raises(ValueError, match="Finer-CAM compares class scores of a classifier"):
        xai.explain(unet(2), inputs(2, n=1), "finercam", target=xai.SegmentationTarget(1, region="all"))


def test_finercam_matches_pytorch_grad_cam():
    from_library = pytest.importorskip("pytorch_grad_cam")
    model = make(SmallCNN, dims=2, width=16, classes=6)
    x = inputs(2, size=32)
    cam = from_library.FinerCAM(model, [model.features[6]], base_method=from_library.GradCAM)
    reference = torch.from_numpy(cam(input_tensor=x, targets=None, alpha=1.0, comparison_categories=[1, 2, 3]))
    ours = xai.explain(model, x, "finercam", layer="features.6")
    for sample in range(x.shape[0]):
        assert reference[sample].max() > 0
        assert pearson(ours[sample], reference[sample]) >= 0.99


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_elementwise_sums_the_positive_part_of_each_channels_product(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, size=16 if dims == 2 else 10)
    target = torch.tensor([1, 0, 0, 2])
    activation, gradient, _ = _capture(model, "features.3", x, backward_target=target)
    reference = _resize(torch.relu(activation * gradient).sum(1), tuple(x.shape[2:]))
    _close(xai.explain(model, x, "gradcam_elementwise", target=target, layer="features.3", normalize=False),
           reference)
    hires = xai.explain(model, x, "hirescam", target=target, layer="features.3", normalize=False)
    assert (reference - hires).abs().max() > 1e-3 * reference.abs().max()  # not HiResCAM under another name
