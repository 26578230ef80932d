"""Attention rollout, gradient rollout and LeGrad against naive references written here.

The references use no engine code. They run a private copy of the model whose
self-attention blocks are re-implemented head by head from the blocks' own weights,
with a zero tensor added to each head's attention so that autograd gives d score / d A
per block and head; the formulas are then written as explicit loops over blocks and heads:
- rollout (Abnar & Zuidema 2020): R = prod_b rownorm(mean_h A_bh + I);
- gradient rollout (Chefer et al. 2021): R = I; R <- R + mean_h (dA_bh * A_bh)^+ R;
- LeGrad (Bousselham et al. 2024): mean_{b,h} (dA_bh)^+, mean over every query row;
read out as the class token's row (MONAI ViT) or the mean of the output-relevant tokens'
rows (MONAI UNETR, no class token: the patches under the segmentation region).
"""
import copy
import json
import itertools
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("monai")
from monai.networks.nets import UNETR, SwinUNETR, ViT  # noqa: E402

from XAIExplainLib.engine import METHODS, SegmentationTarget, explain, explain_many  # noqa: E402
from Testing.support.models import assert_as_found, classifier, snapshot  # noqa: E402

ATTENTION = ("attention_rollout", "gradient_rollout", "legrad")
MODES = {2: "bilinear", 3: "trilinear"}


def _vit(dims=2, layers=3):
    torch.manual_seed(0)
    size = (32,) * dims if dims == 2 else (16,) * dims
    patch = (8,) * dims if dims == 2 else (4,) * dims
    return ViT(in_channels=1, img_size=size, patch_size=patch, hidden_size=48, mlp_dim=96, num_layers=layers,
               num_heads=4, spatial_dims=dims, classification=True, num_classes=3).eval(), size, patch


def _unetr(dims=3):
    torch.manual_seed(0)
    size = (32,) * dims
    return UNETR(in_channels=1, out_channels=3, img_size=size, feature_size=4, hidden_size=32, mlp_dim=64,
                 num_heads=2, spatial_dims=dims).eval(), size, (16,) * dims


def _input(size, n=2, seed=1):
    return torch.randn((n, 1) + size, generator=torch.Generator().manual_seed(seed))


# ---- the naive reference -------------------------------------------------------------------------------------


def _naive_sablock_forward(store):
    """SABlock's attention re-implemented head by head (qkv packed as (qkv, head, dim))."""
    def forward(block, x, attn_mask=None):
        heads, dim = block.num_heads, block.dim_head
        inner = heads * dim
        qkv = block.qkv(x)
        per_head, kept = [], []
        for h in range(heads):
            q = qkv[..., h * dim:(h + 1) * dim]
            k = qkv[..., inner + h * dim:inner + (h + 1) * dim]
            v = qkv[..., 2 * inner + h * dim:2 * inner + (h + 1) * dim]
            attention = torch.softmax(q @ k.transpose(-1, -2) * block.scale, dim=-1)
            probe = torch.zeros_like(attention, requires_grad=True)
            kept.append((attention.detach(), probe))
            per_head.append((attention + probe) @ v)
        store.append(kept)
        return block.out_proj(torch.cat(per_head, dim=-1))
    return forward


def _reference_attention(model, x, score_of):
    """[block][head] -> (A (N, L, L), dscore/dA) from a private copy with naive attention blocks."""
    twin = copy.deepcopy(model)
    store = []
    for module in twin.modules():
        if type(module).__name__ == "SABlock":
            module.forward = types.MethodType(_naive_sablock_forward(store), module)
    with torch.enable_grad():
        out = twin(x)
        out = out[0] if isinstance(out, tuple) else out
        probes = [probe for block in store for _, probe in block]
        grads = torch.autograd.grad(score_of(out), probes)
    grads = iter(grads)
    return [[(attention, next(grads)) for attention, _ in block] for block in store]


def _naive_rollout(blocks):
    result = None
    for block in blocks:
        length = block[0][0].shape[-1]
        mean = sum(attention for attention, _ in block) / len(block)
        mixed = mean + torch.eye(length)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    return result


def _naive_gradient_rollout(blocks):
    n, length = blocks[0][0][0].shape[0], blocks[0][0][0].shape[-1]
    relevance = torch.eye(length).repeat(n, 1, 1)
    for block in blocks:
        weighted = sum((grad * attention).clamp(min=0) for attention, grad in block) / len(block)
        relevance = relevance + weighted @ relevance
    return relevance


def _naive_legrad(blocks):
    total, count = 0, 0
    for block in blocks:
        for _, grad in block:
            total, count = total + grad.clamp(min=0), count + 1
    return total / count


def _relevant_rows(region, grid, patch, n):
    """(N, cells): 1 / count for every patch token holding a region voxel (tokens in row-major grid order)."""
    weights = torch.zeros(n, len(list(itertools.product(*map(range, grid)))))
    for sample in range(n):
        for token, cell in enumerate(itertools.product(*map(range, grid))):
            window = tuple(slice(c * p, (c + 1) * p) for c, p in zip(cell, patch))
            weights[sample, token] = float(region[(sample,) + window].any())
        weights[sample] /= max(float(weights[sample].sum()), 1.0)
    return weights


def _to_map(tokens, grid, size):
    grid_map = tokens.reshape((tokens.shape[0], 1) + grid)
    return F.interpolate(grid_map, size=size, mode=MODES[len(size)], align_corners=False)[:, 0]


def _class_token_readout(relevance, grid, size):
    return _to_map(relevance[:, 0, 1:], grid, size)


def _references(blocks, grid, size, rows):
    """The three maps; ``rows`` (N, L) weights of the query rows read, None for the class token's row."""
    maps = {}
    for name, relevance in (("attention_rollout", _naive_rollout(blocks)),
                            ("gradient_rollout", _naive_gradient_rollout(blocks))):
        if rows is None:
            maps[name] = _class_token_readout(relevance, grid, size)
        else:
            maps[name] = _to_map(torch.stack([rows[i] @ relevance[i] for i in range(len(rows))]), grid, size)
    legrad = _naive_legrad(blocks).mean(dim=1)
    maps["legrad"] = _to_map(legrad[:, 1:] if rows is None else legrad, grid, size)
    return maps


# ---- the methods equal the references ------------------------------------------------------------------------


def test_vit_2d_class_token_equals_naive_reference():
    model, size, patch = _vit(2)
    x = _input(size)
    with torch.no_grad():
        predicted = model(x)[0].argmax(dim=1)
    blocks = _reference_attention(model, x, lambda out: out[torch.arange(len(x)), predicted].sum())
    grid = tuple(s // p for s, p in zip(size, patch))
    expected = _references(blocks, grid, size, rows=None)
    before = snapshot(model)
    got = explain_many(model, x, list(ATTENTION), normalize=False)
    assert_as_found(model, before)
    for name in ATTENTION:
        assert got[name].shape == (2,) + size
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
        assert float(got[name].std()) > 0, name


def test_vit_class_specific_methods_follow_the_target():
    """An explicit class per sample: gradient methods change with it, the rollout does not."""
    model, size, patch = _vit(2)
    x = _input(size, seed=3)
    grid = tuple(s // p for s, p in zip(size, patch))
    classes = torch.tensor([2, 0])
    blocks = _reference_attention(model, x, lambda out: out[torch.arange(2), classes].sum())
    expected = _references(blocks, grid, size, rows=None)
    got = explain_many(model, x, list(ATTENTION), target=[2, 0], normalize=False)
    other = explain_many(model, x, list(ATTENTION), target=[1, 1], normalize=False)
    for name in ATTENTION:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(other["attention_rollout"], got["attention_rollout"])
    assert not torch.allclose(other["gradient_rollout"], got["gradient_rollout"])
    assert not torch.allclose(other["legrad"], got["legrad"])


def test_vit_3d_batch_equals_samples_one_by_one():
    model, size, patch = _vit(3, layers=2)
    x = _input(size, n=3, seed=4)
    batch = explain_many(model, x, list(ATTENTION), target=[0, 1, 2], normalize=False)
    for i, target in enumerate([0, 1, 2]):
        alone = explain_many(model, x[i:i + 1], list(ATTENTION), target=target, normalize=False)
        for name in ATTENTION:
            torch.testing.assert_close(batch[name][i:i + 1], alone[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("dims", [3, 2])
def test_unetr_without_class_token_reads_the_segmentation_region(dims):
    """UNETR has no class token: the rows of the patches under the target region are averaged,
    and the gradient methods differentiate the Seg-Grad-CAM score over that region."""
    model, size, patch = _unetr(dims)
    x = _input(size)
    region = torch.zeros(size, dtype=torch.bool)
    region[(slice(2, 12),) + (slice(3, 30),) * (dims - 1)] = True  # two of the patches (2D) / four (3D)
    target = SegmentationTarget(class_index=1, region=region)
    blocks = _reference_attention(model, x, lambda out: (out[:, 1] * region).sum())
    grid = tuple(s // p for s, p in zip(size, patch))
    rows = _relevant_rows(region.expand((2,) + size), grid, patch, 2)
    assert 0 < int((rows[0] > 0).sum()) < rows.shape[1]  # a strict subset of the tokens
    expected = _references(blocks, grid, size, rows)
    before = snapshot(model)
    got = explain_many(model, x, list(ATTENTION), target=target, normalize=False)
    assert_as_found(model, before)
    for name in ATTENTION:
        assert got[name].shape == (2,) + size
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_unetr_region_all_averages_every_token():
    model, size, patch = _unetr(2)
    x = _input(size, seed=5)
    everywhere = torch.ones((2,) + size, dtype=torch.bool)
    blocks = _reference_attention(model, x, lambda out: out[:, 2].sum())
    grid = tuple(s // p for s, p in zip(size, patch))
    expected = _references(blocks, grid, size, _relevant_rows(everywhere, grid, patch, 2))
    got = explain_many(model, x, ["attention_rollout", "gradient_rollout"],
                       target=SegmentationTarget(class_index=2, region="all"), normalize=False)
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


# ---- capture without editing the model -------------------------------------------------------------------------


def test_fused_and_saved_attention_flags_are_restored():
    """Flash attention on (no softmax call) is switched off for the pass and back on after; a
    save_attn block's att_mat is as it was; the maps equal those of the plain model."""
    model, size, _ = _vit(2, layers=2)
    x = _input(size)
    plain = explain_many(model, x, list(ATTENTION), normalize=False)
    changed = copy.deepcopy(model)
    first, second = [m for m in changed.modules() if type(m).__name__ == "SABlock"]
    first.use_flash_attention = True
    marker = torch.full((1,), 7.0)
    second.save_attn, second.att_mat = True, marker
    before = snapshot(changed)
    got = explain_many(changed, x, list(ATTENTION), normalize=False)
    assert_as_found(changed, before)
    assert first.use_flash_attention is True and second.save_attn is True and second.att_mat is marker
    for name in ATTENTION:
        torch.testing.assert_close(got[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)


class _TimmStyleAttention(nn.Module):
    """The layout of timm's ``Attention``: packed qkv, ``fused_attn`` switching to SDPA; ``keep`` (test-only)
    stores the attention for the reference."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)
        self.fused_attn, self.keep, self.kept = True, False, None

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            if self.keep:
                attn.retain_grad()
                self.kept = attn
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _TimmStyleViT(nn.Module):
    def __init__(self, dim=16, heads=2, depth=2, classes=3):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.ModuleList(_TimmStyleAttention(dim, heads) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = tokens + block(tokens)
        return self.head(tokens[:, 0])


def test_timm_style_attention_is_captured_through_its_softmax():
    torch.manual_seed(0)
    model = _TimmStyleViT().eval()
    x = _input((16, 16))
    twin = copy.deepcopy(model)
    for block in twin.blocks:
        block.fused_attn, block.keep = False, True
    out = twin(x)
    out[torch.arange(2), out.argmax(dim=1)].sum().backward()
    blocks = [[(block.kept[:, h].detach(), block.kept.grad[:, h]) for h in range(block.num_heads)]
              for block in twin.blocks]
    expected = _references(blocks, (4, 4), (16, 16), rows=None)
    before = snapshot(model)
    got = explain_many(model, x, list(ATTENTION), normalize=False)
    assert_as_found(model, before)
    assert all(block.fused_attn is True for block in model.blocks)
    for name in ATTENTION:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_model_left_as_found_after_an_error_mid_pass():
    model, size, _ = _vit(2, layers=2)
    model.train()  # found in training mode, with trainable parameters
    before = snapshot(model)
    with pytest.raises(ValueError, match="token_patch_size"):
        explain(model, _input(size), "gradient_rollout", token_patch_size=4)  # 16 patches, 4 tokens
    assert_as_found(model, before)


# ---- which models they apply to ---------------------------------------------------------------------------------


def test_applicable_only_to_models_with_global_attention():
    vit, _, _ = _vit(2, layers=1)
    unetr, _, _ = _unetr(2)
    cnn = classifier(2)
    for name in ATTENTION:
        info = METHODS[name]
        assert info.applicable("classification", 2, module=vit) is None
        assert info.applicable("segmentation", 2, module=unetr) is None
        reason = info.applicable("classification", 2, module=cnn)
        assert "no self-attention modules" in reason and "gradcam" in reason and name not in reason.split(":")[-1]
        assert info.applicable("classification", 2, scripted=True) is not None
    assert METHODS["gradcam"].applicable("classification", 2, module=cnn) is None


def test_windowed_attention_refused_naming_the_methods_that_work():
    model = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3, depths=(1, 1, 1, 1),
                      num_heads=(1, 1, 1, 1), window_size=4)
    before = snapshot(model)
    for name in ATTENTION:
        reason = METHODS[name].applicable("segmentation", 3, module=model)
        assert "windowed" in reason
        working = reason.split("methods that work on this model: ")[1].split(", ")
        assert "gradcam" in working and "kwc" in working and "cam" not in working
        assert not set(ATTENTION) & set(working)
        with pytest.raises(ValueError, match="windowed.*methods that work on this model: .*gradcam"):
            explain(model, _input((32, 32, 32), n=1), name)
    assert_as_found(model, before)


def test_cnn_refused_by_explain():
    model = classifier(2)
    with pytest.raises(ValueError, match="no self-attention modules.*methods that work on this model"):
        explain(model, _input((16, 16), n=1), "legrad")


# ---- listed and accepted only for attention models: CLI, panel, pipeline ----------------------------------------


def _card(tmp_path, name, task, size, kwargs):
    """A model folder naming a MONAI network with small kwargs (2D) and its state dict."""
    from monai.networks import nets

    kwargs = dict(kwargs, spatial_dims=2, in_channels=1)
    torch.manual_seed(0)
    network = getattr(nets, name)(**kwargs).eval()
    folder = tmp_path / name
    folder.mkdir()
    torch.save(network.state_dict(), folder / "weights.pt")
    card = {"name": f"tiny-{name.lower()}", "task": task, "spatial_dims": 2, "input": {"channels": 1, "size": size},
            "classes": ["background", "organ"] if task == "segmentation" else ["negative", "positive"],
            "architecture": {"class": f"monai.networks.nets:{name}", "kwargs": kwargs},
            "weights": {"file": "weights.pt"}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    return {
        "vit": _card(root, "ViT", "classification", [32, 32], {
            "img_size": [32, 32], "patch_size": [8, 8], "hidden_size": 48, "mlp_dim": 96, "num_layers": 2,
            "num_heads": 4, "classification": True, "num_classes": 2}),
        "unet": _card(root, "UNet", "segmentation", [32, 32], {
            "out_channels": 2, "channels": [4, 8], "strides": [2]}),
    }


def _listed(capsys, *args):
    from XAIExplainLib import cli

    status = cli.main([str(a) for a in args])
    out = capsys.readouterr().out
    assert status == 0
    return {line.split()[0] for line in out.splitlines() if line and not line[0].isspace() and line[0] != "["}


def test_xaiexplain_methods_lists_attention_methods_only_for_attention_models(capsys, cards):
    for_vit = _listed(capsys, "methods", "--model", cards["vit"])
    for_unet = _listed(capsys, "methods", "--model", cards["unet"])
    catalogue = _listed(capsys, "methods")
    assert set(ATTENTION) <= for_vit and "gradcam" in for_vit and "kwc" not in for_vit
    assert not set(ATTENTION) & for_unet and "gradcam" in for_unet and "kwc" in for_unet
    assert set(ATTENTION) <= catalogue


def test_panel_and_pipeline_ask_the_same_rule(cards):
    from XAIExplainLib.logic.model_catalogue import ModelCatalogue
    from XAIExplainLib.models.pipeline import _check_methods

    catalogue = ModelCatalogue()
    for key, enabled in (("vit", True), ("unet", False)):
        rows = {name: (on, reason) for name, _, on, reason in catalogue.methods_for(str(cards[key]))}
        for name in ATTENTION:
            assert rows[name][0] is enabled, (key, name, rows[name])
        if not enabled:
            assert "no self-attention modules" in rows["legrad"][1]
            with pytest.raises(ValueError, match="legrad.*no self-attention modules"):
                _check_methods(catalogue.get(str(cards[key])), ["legrad"])


def test_cli_explain_refuses_attention_methods_on_a_cnn(capsys, cards, tmp_path):
    from XAIExplainLib import cli

    sitk = pytest.importorskip("SimpleITK")
    image = tmp_path / "image.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(1024, dtype=np.float32).reshape(32, 32)), str(image))
    status = cli.main(["explain", str(image), "--model", str(cards["unet"]), "--method", "gradient_rollout",
                       "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status != 0 and "--method gradient_rollout: does not apply to 'tiny-unet'" in err
    assert "no self-attention modules" in err and "methods for this model:" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_three_methods_share_one_forward():
    model, size, _ = _vit(2, layers=2)
    x = _input(size)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        together = explain_many(model, x, list(ATTENTION), normalize=False)
        assert len(calls) == 1
        alone = {name: explain_many(model, x, [name], normalize=False)[name] for name in ATTENTION}
    finally:
        handle.remove()
    for name in ATTENTION:
        torch.testing.assert_close(together[name], alone[name], rtol=1e-5, atol=1e-7, msg=name)


def test_cli_runs_the_attention_methods_as_one_group():
    from XAIExplainLib.cli.explain_run import method_groups

    assert method_groups(["gradcam", "legrad", "saliency", "attention_rollout", "hirescam"]) == [
        ("gradcam", "hirescam"), ("legrad", "attention_rollout"), ("saliency",)]
