"""The lesion card's windows are pyliverlesionseg's (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020):
``unet_lesion_predict`` with ``center_sampling=False`` tiles the liver crop with output segments
(``DeepVoxNet.predict``). The naive transcription of their loop (``Testing/engine/test_tiles.py``) runs a
small LiverLesionNet (the lesion architecture with few features, random weights, a small output segment)
on the same prepared array as the card path (``CardPipeline.volume_options`` into the engine).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from Testing.engine.test_tiles import their_predict
from XAIExplainLib.engine import explain_volume, predict_volume
from XAIExplainLib.models.card import ModelCard, ModelCardError, load_card
from XAIExplainLib.models.card_steps import WindowsSpec
from XAIExplainLib.models.liver_unet import LiverLesionNet
from XAIExplainLib.models.preprocessing import CardPipeline
from XAIExplainLib.models.search_paths import resolve_model_name

OUTPUT_XYZ = (12, 12, 10)


@pytest.fixture(scope="module")
def small():
    """(network, card): the lesion architecture with 2 features and a 12 x 12 x 10 output segment."""
    card = load_card(resolve_model_name("liver-lesion-seg-3d"))
    kwargs = dict(card.architecture.kwargs)
    kwargs["output_size"] = list(OUTPUT_XYZ)
    kwargs["number_features_per_pathway"] = [[[2, 2], [2, 2]], [[2, 2], [2, 2]], [[2, 2], [2, 2]], [[2, 2], []]]
    torch.manual_seed(0)
    net = LiverLesionNet(**kwargs).eval()
    windows = dataclasses.replace(card.input.windows, output_segment=OUTPUT_XYZ[::-1])
    card = dataclasses.replace(card, input=dataclasses.replace(card.input, patch_size=net.numpy_input_size,
                                                               windows=windows))
    return net, card


def _lps(ras: np.ndarray) -> np.ndarray:
    """Their RAS (x, y, z) array as our LPS numpy (z, y, x) volume."""
    return np.ascontiguousarray(np.flip(ras, (0, 1)).transpose(2, 1, 0))


def _their_network(net):
    """Their Keras model on one input segment (their layout): the output segment's logit."""
    def run(segment):
        with torch.no_grad():
            return net.network(torch.from_numpy(segment)[None, None])[0, 0].double().numpy()
    return run


# x: 12 + 8, y: 2 x 12, z shorter than 10; then x shorter than 12, y one segment, z: 10 + 3
@pytest.mark.parametrize("shape_xyz", [(20, 24, 7), (9, 12, 13)])
def test_lesion_probabilities_are_their_tiled_loop(small, shape_xyz, two_torch_threads):
    net, card = small
    image = np.random.default_rng(0).uniform(-0.5, 0.5, size=shape_xyz).astype(np.float32)  # a crop, their RAS
    logits = their_predict(image, _their_network(net), net.input_size, OUTPUT_XYZ)
    want = _lps(1 / (1 + np.exp(-logits)))  # their sigmoid
    options = CardPipeline(card).volume_options()
    assert options["tiling"].steps == "tiles" and options["patch_size"] == list(net.numpy_input_size)
    got = predict_volume(net, _lps(image), mode="volume", **options)
    probability = torch.softmax(torch.from_numpy(got), 0)[1].numpy()
    assert np.abs(probability - want).max() <= 1e-5


def test_lesion_maps_are_written_with_the_outputs_rule(small, two_torch_threads):
    """Each window's map is kept over its output segment, placed and filled as their outputs are."""
    net, card = small
    image = np.random.default_rng(1).uniform(-0.5, 0.5, size=(16, 12, 8)).astype(np.float32)
    in_xyz = net.input_size
    before = [(i - o) // 2 for i, o in zip(in_xyz, OUTPUT_XYZ)]

    def window_map(segment):  # the map of one window alone, its output segment (their layout)
        alone = explain_volume(net, _lps(segment), "saliency", mode="volume", normalize=False)
        theirs = np.flip(alone.transpose(2, 1, 0), (0, 1))
        return theirs[tuple(slice(b, b + o) for b, o in zip(before, OUTPUT_XYZ))].astype(np.float64)

    want = _lps(their_predict(image, window_map, in_xyz, OUTPUT_XYZ))
    got, outputs = explain_volume(net, _lps(image), "saliency", mode="volume", normalize=False, return_outputs=True,
                                  **CardPipeline(card).volume_options())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    logits = their_predict(image, _their_network(net), in_xyz, OUTPUT_XYZ)
    np.testing.assert_allclose(outputs[1] * 2, _lps(logits), atol=1e-5)  # channel 1 is z / 2


def test_the_bundled_card_declares_their_tiles_as_the_converter_writes_them():
    from XAIExplainLib.models.training import convert_liver

    folder = resolve_model_name("liver-lesion-seg-3d")
    bundled = json.loads((folder / "card.json").read_text())
    spec = convert_liver.MODELS["liver-lesion-seg-3d"]
    assert bundled["input"]["windows"] == {"rule": "tiles", "output_segment": list(reversed(spec["output_size"])),
                                           "source_axes": convert_liver.LESION_SOURCE_AXES,
                                           "reversed_axes": convert_liver.LESION_REVERSED_AXES}
    assert bundled["provenance"]["differences_from_their_pipeline"] == convert_liver.DIFFERENCES["liver-lesion-seg-3d"]
    card = load_card(folder)
    assert card.input.windows == WindowsSpec("tiles", (42, 84, 92), (2, 1, 0), (1, 2))
    assert ModelCard.from_dict(card.to_dict(), base_dir=card.base_dir).input.windows == card.input.windows


@pytest.mark.parametrize("windows, field", [
    ({"rule": "overlap"}, "input.windows.rule"),
    ({"rule": "sliding", "output_segment": [1, 1, 1]}, "input.windows"),
    ({"rule": "tiles"}, "input.windows.output_segment"),
    ({"rule": "tiles", "output_segment": [42, 84, 200]}, "input.windows.output_segment"),
    ({"rule": "tiles", "output_segment": [42, 84, 92], "source_axes": [0, 0, 1]}, "input.windows.source_axes"),
    ({"rule": "tiles", "output_segment": [42, 84, 92], "reversed_axes": [3]}, "input.windows.reversed_axes"),
    ({"rule": "tiles", "output_segment": [42, 84, 92], "stride": 1}, "input.windows"),
])
def test_bad_windows_fields_name_the_field(windows, field):
    folder = resolve_model_name("liver-lesion-seg-3d")
    data = json.loads((folder / "card.json").read_text())
    data["input"]["windows"] = windows
    with pytest.raises(ModelCardError, match=f"field '{field}'"):
        ModelCard.from_dict(data, base_dir=folder)
