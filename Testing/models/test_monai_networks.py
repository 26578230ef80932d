"""MONAI network classes named in a model card load and explain in 2D and 3D.

Each card names ``monai.networks.nets:<Class>`` with small kwargs and a state dict written
by the test; the loaded network must give the original network's outputs, and Grad-CAM
(at the engine's default layer: a convolution, or for ViT the last block's first norm)
must give a map of the input's shape that is not constant (segmenters: class 1 over the
whole input, as untrained networks need not predict it anywhere).
"""
import json

import pytest
import torch

pytest.importorskip("monai")
from monai.networks import nets  # noqa: E402

from XAIExplainLib.engine import SegmentationTarget, explain  # noqa: E402
from XAIExplainLib.models.loading import load_model  # noqa: E402

SEG = "segmentation"
CLS = "classification"
CASES = [
    ("SegResNet", 2, SEG, (32, 32), {"init_filters": 8, "out_channels": 2}),
    ("SegResNet", 3, SEG, (16, 16, 16), {"init_filters": 8, "out_channels": 2}),
    ("UNet", 2, SEG, (32, 32), {"out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2]}),
    ("UNet", 3, SEG, (16, 16, 16), {"out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2]}),
    ("DenseNet121", 2, CLS, (32, 32), {"out_channels": 2, "init_features": 8, "growth_rate": 4}),
    ("DenseNet121", 3, CLS, (32, 32, 32), {"out_channels": 2, "init_features": 8, "growth_rate": 4}),
    ("SwinUNETR", 2, SEG, (64, 64), {"out_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
                                     "num_heads": [1, 1, 1, 1], "window_size": 4, "norm_name": "batch"}),
    ("SwinUNETR", 3, SEG, (32, 32, 32), {"out_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
                                         "num_heads": [1, 1, 1, 1], "window_size": 4, "norm_name": "batch"}),
    ("UNETR", 2, SEG, (32, 32), {"out_channels": 2, "img_size": [32, 32], "feature_size": 4,
                                 "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}),
    ("UNETR", 3, SEG, (32, 32, 32), {"out_channels": 2, "img_size": [32, 32, 32], "feature_size": 4,
                                     "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}),
    ("ViT", 2, CLS, (32, 32), {"img_size": [32, 32], "patch_size": [8, 8], "hidden_size": 48, "mlp_dim": 96,
                               "num_layers": 2, "num_heads": 4, "classification": True, "num_classes": 2}),
    ("ViT", 3, CLS, (16, 16, 16), {"img_size": [16, 16, 16], "patch_size": [4, 4, 4], "hidden_size": 48,
                                   "mlp_dim": 96, "num_layers": 2, "num_heads": 4, "classification": True,
                                   "num_classes": 2}),
]


def _card_folder(tmp_path, name, dims, task, size, kwargs):
    kwargs = dict(kwargs, spatial_dims=dims, in_channels=1)
    torch.manual_seed(0)
    network = getattr(nets, name)(**kwargs).eval()
    folder = tmp_path / f"{name}-{dims}d"
    folder.mkdir()
    torch.save(network.state_dict(), folder / "weights.pt")
    card = {"name": f"monai-{name.lower()}-{dims}d", "task": task, "spatial_dims": dims,
            "input": {"channels": 1, "size": list(size)},
            "classes": ["background", "organ"] if task == SEG else ["negative", "positive"],
            "architecture": {"class": f"monai.networks.nets:{name}", "kwargs": kwargs},
            "weights": {"file": "weights.pt"}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder, network


@pytest.mark.parametrize("name,dims,task,size,kwargs", CASES, ids=[f"{c[0]}-{c[1]}d" for c in CASES])
def test_monai_network_from_card_loads_and_explains(tmp_path, name, dims, task, size, kwargs):
    folder, original = _card_folder(tmp_path, name, dims, task, size, kwargs)
    loaded = load_model(folder)
    assert type(loaded.module) is type(original)
    x = torch.randn((2, 1) + size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = original(x), loaded.module(x)
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = got[0] if isinstance(got, tuple) else got
    torch.testing.assert_close(got, expected)
    target = SegmentationTarget(class_index=1, region="all") if task == SEG else 1
    maps, info = explain(loaded.module, x, "gradcam", target=target, return_info=True)
    assert maps.shape == (2,) + size
    assert float(maps.std()) > 0.01, info
    if name == "ViT":
        assert info["layers"] == ["blocks.1.norm1"]
