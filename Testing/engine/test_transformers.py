"""Transformer layers and tuple/dict outputs: the engine against hand-written references.

The references here use plain autograd and reshape tokens by hand (no engine code):
- MONAI ViT classifiers (2D and 3D): Grad-CAM at the last block's first norm, class token
  dropped, patch tokens laid out on the patch grid;
- MONAI UNETR (tokens without a class token) and SwinUNETR (channels-last Swin blocks) in
  3D with a segmentation target (class logits summed over the predicted region);
- pytorch-grad-cam with its documented ViT ``reshape_transform``, where it is installed.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("monai")
from monai.networks.nets import UNETR, ViT, SwinUNETR  # noqa: E402

from XAIExplainLib.engine import explain, explain_many, list_layers, predict_volume  # noqa: E402

MODES = {2: "bilinear", 3: "trilinear"}


def _vit(dims: int, seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    size = (32, 32) if dims == 2 else (16, 16, 16)
    patch = (8, 8) if dims == 2 else (4, 4, 4)
    return ViT(in_channels=1, img_size=size, patch_size=patch, hidden_size=48, mlp_dim=96, num_layers=2,
               num_heads=4, spatial_dims=dims, classification=True, num_classes=3).eval()


def _input(shape, seed=1):
    torch.manual_seed(seed)
    return torch.randn(shape)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _minmax(m: torch.Tensor) -> torch.Tensor:
    flat = m.reshape(m.shape[0], -1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(m.shape)


def _captured(model, layer, x, score_of, to_grid):
    """Activation and gradient of ``layer`` by plain autograd, reshaped to (N, C, *grid) by ``to_grid``."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        with torch.enable_grad():
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            store["a"].retain_grad()
            score_of(out).backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return to_grid(store["a"].detach()), to_grid(store["a"].grad.detach())


def _naive_gradcam(a, g, size):
    """ReLU(sum_k mean(g_k) A_k), channel by channel, then resized to the input."""
    total = torch.zeros((a.shape[0],) + tuple(a.shape[2:]), dtype=torch.float64)
    for k in range(a.shape[1]):
        weight = g[:, k].double().flatten(1).mean(1)
        total += weight.reshape((-1,) + (1,) * (a.dim() - 2)) * a[:, k].double()
    cam = torch.relu(total).float()
    return F.interpolate(cam[:, None], size=size, mode=MODES[len(size)], align_corners=False)[:, 0]


def _vit_tokens_to_grid(grid):
    def to_grid(tokens):  # drop the class token, tokens (N, L, C) -> (N, C, *grid)
        patches = tokens[:, 1:, :]
        return patches.reshape((tokens.shape[0],) + grid + (tokens.shape[2],)).movedim(-1, 1)
    return to_grid


@pytest.mark.parametrize("dims", [2, 3])
def test_vit_gradcam_matches_naive_token_grid(dims):
    vit = _vit(dims)
    x = _input((2, 1) + ((32, 32) if dims == 2 else (16, 16, 16)))
    grid = (4,) * dims
    with torch.no_grad():
        classes = vit(x)[0].argmax(1)
    a, g = _captured(vit, vit.blocks[-1].norm1, x, lambda out: out.gather(1, classes[:, None]).sum(),
                     _vit_tokens_to_grid(grid))
    expected = _minmax(_naive_gradcam(a, g, tuple(x.shape[2:])))
    maps, info = explain(vit, x, "gradcam", return_info=True)  # default layer, tuple output
    assert info["layers"] == ["blocks.1.norm1"]
    assert maps.shape == (2,) + tuple(x.shape[2:])
    assert expected.std() > 0.05  # a real map, not a constant
    torch.testing.assert_close(maps, expected, atol=2e-5, rtol=1e-4)


def test_vit_layer_methods_share_the_token_grid_and_give_maps():
    vit = _vit(2)
    x = _input((2, 1, 32, 32))
    maps = explain_many(vit, x, ["gradcam", "gradcampp", "hirescam", "xgradcam", "layercam", "scorecam"],
                        layer="blocks.1.norm1")
    for name, value in maps.items():
        assert value.shape == (2, 32, 32), name
        assert value.std() > 0.01, name
    # a layer after the last attention gets gradient only at the class token: an all-zero Grad-CAM
    assert float(explain(vit, x, "gradcam", layer="blocks.1", normalize=False).abs().max()) == 0.0


def test_vit_layers_listed_and_reshape_option_matches_automatic_grid():
    vit = _vit(2)
    x = _input((2, 1, 32, 32))
    layers = list_layers(vit, x)
    assert {"blocks.0.norm1", "blocks.1.norm1", "blocks.1", "norm"} <= set(layers)
    assert "classification_head.0" not in layers

    def documented(tensor, height=4, width=4):  # pytorch-grad-cam's ViT reshape_transform
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    automatic = explain(vit, x, "gradcam", layer="blocks.1.norm1", normalize=False)
    given = explain(vit, x, "gradcam", layer="blocks.1.norm1", normalize=False, reshape=documented)
    torch.testing.assert_close(given, automatic)
    with pytest.raises(ValueError, match="the reshape option must only select and rearrange"):
        explain(vit, x, "gradcam", layer="blocks.1.norm1", reshape=lambda t: 2 * documented(t))


def test_vit_against_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    vit = _vit(2)

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[0]

    def reshape_transform(tensor, height=4, width=4):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    x = _input((2, 1, 32, 32))
    with torch.no_grad():
        classes = vit(x)[0].argmax(1).tolist()
    with pgc.GradCAM(model=Logits(vit), target_layers=[vit.blocks[-1].norm1],
                     reshape_transform=reshape_transform) as cam:
        reference = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
    ours = explain(vit, x, "gradcam", layer="blocks.1.norm1")
    for i in range(2):
        assert _pearson(ours[i], reference[i]) >= 0.99


def _unetr(seed=0):
    torch.manual_seed(seed)
    return UNETR(in_channels=1, out_channels=2, img_size=(32, 32, 32), feature_size=4, hidden_size=48,
                 mlp_dim=96, num_heads=4).eval()


def _region_score(cls):
    def score(out):
        region = out.argmax(1) == cls
        assert region.any(), "the test model predicts the class nowhere"
        return (out[:, cls] * region).sum()
    return score


def test_unetr_tokens_without_class_token_match_naive_grid():
    model = _unetr()
    x = _input((1, 1, 32, 32, 32))

    def to_grid(tokens):  # 2 x 2 x 2 patches of 16, no class token
        return tokens.reshape(tokens.shape[0], 2, 2, 2, tokens.shape[2]).movedim(-1, 1)

    layer = "vit.blocks.5"
    a, g = _captured(model, model.vit.blocks[5], x, _region_score(1), to_grid)
    expected = _minmax(_naive_gradcam(a, g, (32, 32, 32)))
    maps = explain(model, x, "gradcam", layer=layer, target=1)
    assert expected.std() > 0.05
    torch.testing.assert_close(maps, expected, atol=2e-5, rtol=1e-4)


def test_swinunetr_channels_last_blocks_match_naive_grid():
    torch.manual_seed(0)
    model = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1),
                      num_heads=(1, 1, 1, 1), window_size=4, norm_name="batch", spatial_dims=3).eval()
    x = _input((1, 1, 32, 32, 32))
    block = model.swinViT.layers2[0].blocks[0]  # (N, 8, 8, 8, C): channels-last, patch 2 then merged once
    a, g = _captured(model, block, x, _region_score(1), lambda t: t.movedim(-1, 1))
    assert a.shape[2:] == (8, 8, 8)
    expected = _minmax(_naive_gradcam(a, g, (32, 32, 32)))
    maps = explain(model, x, "gradcam", layer="swinViT.layers2.0.blocks.0", target=1)
    assert expected.std() > 0.05
    torch.testing.assert_close(maps, expected, atol=2e-5, rtol=1e-4)
    assert "swinViT.layers2.0.blocks.0" in list_layers(model, x)


class _TwoHeads(nn.Module):
    """A small CNN whose forward returns its logits together with other tensors."""

    def __init__(self, form: str):
        super().__init__()
        torch.manual_seed(3)
        self.form = form
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Linear(8, 3)

    def logits(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))

    def forward(self, x):
        features = self.features(x)
        logits = self.head(features.mean(dim=(2, 3)))
        if self.form == "tuple":
            return logits, features
        return {"aux": logits.detach() * 0, "logits": logits}


class _Plain(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner.logits(x)


def test_tuple_and_dict_outputs_give_the_maps_of_the_logits():
    x = _input((3, 1, 16, 16))
    for form, options in (("tuple", {}), ("tuple", {"output_key": 0}), ("dict", {"output_key": "logits"})):
        model = _TwoHeads(form)
        methods = ["gradcam", "saliency", "guided_backprop", "occlusion"]
        got = explain_many(model, x, methods, layer="features.2", normalize=False, **options)
        expected = explain_many(_Plain(model), x, methods, layer="inner.features.2", normalize=False)
        for name in methods:
            torch.testing.assert_close(got[name], expected[name], msg=f"{form} {name}")
    volume = _input((5, 16, 16)).numpy()
    model = _TwoHeads("dict")
    torch.testing.assert_close(torch.from_numpy(predict_volume(model, volume, output_key="logits")),
                               torch.from_numpy(predict_volume(_Plain(model), volume)))


def test_output_errors_name_the_choices():
    x = _input((1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"the model returns a dict with keys \['aux', 'logits'\]; "
                                         r"pass output_key= one of them"):
        explain(_TwoHeads("dict"), x, "gradcam", layer="features.2")
    with pytest.raises(ValueError, match=r"output_key='scores' is not one of them"):
        explain(_TwoHeads("dict"), x, "gradcam", layer="features.2", output_key="scores")
    with pytest.raises(ValueError, match=r"output_key=2 must be an index 0..1"):
        explain(_TwoHeads("tuple"), x, "gradcam", layer="features.2", output_key=2)
    with pytest.raises(ValueError, match=r"output_key=0 was given but the model returns a single tensor"):
        explain(_Plain(_TwoHeads("tuple")), x, "gradcam", output_key=0)
    with pytest.raises(TypeError, match=r"option reshape must be a callable"):
        explain(_TwoHeads("tuple"), x, "gradcam", layer="features.2", reshape="tokens")
    with pytest.raises(ValueError, match=r"option token_patch_size must be a positive int"):
        explain(_TwoHeads("tuple"), x, "gradcam", layer="features.2", token_patch_size=0)
    with pytest.raises(TypeError, match=r"for every method: output_key, reshape, token_patch_size"):
        explain(_TwoHeads("tuple"), x, "gradcam", layer="features.2", patch=8)


class _OddTokens(nn.Module):
    """Tokens whose count (7) follows from no grid of a 16 x 16 input."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16 * 16, 7 * 4)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        tokens = self.embed(x.flatten(1)).reshape(x.shape[0], 7, 4)
        return self.head(self.mix(tokens).mean(1))


def test_tokens_without_a_grid_are_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"layer 'mix' has output \(1, 7, 4\): an output of 7 tokens fits no "
                                         r"grid of an input with spatial size \(16, 16\).*pass token_patch_size="):
        explain(_OddTokens(), _input((1, 1, 16, 16)), "gradcam", layer="mix")


def test_models_left_as_found_after_token_explanations_and_errors():
    vit = _vit(2)
    vit.train()
    vit.blocks[0].requires_grad_(False)
    modes = {name: m.training for name, m in vit.named_modules()}
    flags = {name: p.requires_grad for name, p in vit.named_parameters()}
    x = _input((2, 1, 32, 32))
    explain_many(vit, x, ["gradcam", "saliency"])
    with pytest.raises(ValueError):
        explain(vit, x, "gradcam", layer="blocks.1.norm1", output_key=5)
    assert modes == {name: m.training for name, m in vit.named_modules()}
    assert flags == {name: p.requires_grad for name, p in vit.named_parameters()}
    assert all(not m._forward_hooks for m in vit.modules())
    assert all(p.grad is None for p in vit.parameters())


def test_layout_rules_keep_channels_first_maps_and_read_channels_last_grids():
    from XAIExplainLib.engine.tokens import ChannelsLastLayout, TokenLayout, layout_for
    # (N, 16, 16, 16) of a 32 x 32 input is a channels-first map at stride 2, even though
    # (16, 16) would also be a grid: channels-first wins
    assert layout_for((1, 16, 16, 16), (32, 32), 1, None) is None
    assert isinstance(layout_for((1, 8, 8, 8, 48), (32, 32, 32), 1, (2, 2, 2)), ChannelsLastLayout)
    tokens = layout_for((1, 17, 48), (32, 32), 1, (8, 8))
    assert isinstance(tokens, TokenLayout) and tokens.grid == (4, 4) and tokens.prefix == 1
    anisotropic = layout_for((1, 64, 48), (16, 32, 32), 1, (4, 8, 8))  # 4 x 4 x 4 patches of 4 x 8 x 8
    assert anisotropic.grid == (4, 4, 4) and anisotropic.prefix == 0
    assert layout_for((3, 1, 4, 17, 12), (16, 16, 16), 1, None) is None  # not per sample (qkv split)


def test_window_weights_option_blends_with_the_given_importance_map():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 1), nn.ReLU(), nn.Conv3d(4, 2, 1)).eval()
    volume = _input((20, 12, 12)).numpy()
    flat = predict_volume(model, volume, mode="volume", patch_size=8, overlap=0.5,
                          window_weights=torch.ones(8, 8, 8))
    with torch.no_grad():  # a pointwise network: uniform blending of windows equals the whole-volume output
        whole = model(torch.from_numpy(volume)[None, None])[0]
    torch.testing.assert_close(torch.from_numpy(flat), whole, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"window_weights must be a tensor of the window's shape \(8, 8, 8\)"):
        predict_volume(model, volume, mode="volume", patch_size=8, window_weights=torch.ones(4, 4, 4))
