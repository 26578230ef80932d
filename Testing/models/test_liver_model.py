"""pyliverlesionseg's liver and liver-lesion networks, ported to torch and bundled.

The references are independent of the port: ``reference.npz`` in each model folder holds
a real-CT patch (lung1's lowest slices) and the probabilities *Keras* computed for it with
pyliverlesionseg's own ``create_unet_like_model`` and the original HDF5 (written by
``convert_liver``); their CT normalisation is written out literally; their output placement
is their ``DeepVoxNet.predict`` fill (scipy's distance transform). The Keras rebuild itself
runs in ``test_liver_keras.py`` where Keras and the wheel are present.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from XAIExplainLib.imaging.intensity import window
from XAIExplainLib.models import ModelCardError, load_model
from XAIExplainLib.models.card import ModelCard, load_card
from XAIExplainLib.models.liver_unet import LiverLesionNet
from XAIExplainLib.models.search_paths import resolve_model_name
from XAIExplainLib.models.preprocessing import prepare

NAMES = ("liver-seg-3d", "liver-lesion-seg-3d")


def their_ct_normalisation(hu):
    """cnn_liver_lesion_seg_CT_MR_functions: ``np.clip(img_vol_med / 1000, -0.2, 0.2) * 2.5``."""
    return np.clip(np.asarray(hu, dtype=np.float64) / 1000, -0.2, 0.2) * 2.5


@pytest.fixture(scope="module")
def models(two_torch_threads):
    # the load-time dry run is on the network's smallest input (see the test below), so loading is quick
    return {name: load_model(name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_loading_probes_the_network_on_its_smallest_input(name, monkeypatch, two_torch_threads):
    seen = []
    forward = LiverLesionNet.forward

    def spy(self, x):
        seen.append(tuple(x.shape))
        return forward(self, x)

    monkeypatch.setattr(LiverLesionNet, "forward", spy)
    loaded = load_model(name)  # check=True: the trial forward runs
    trial = loaded.module.minimum_input_size
    assert (1, 1) + trial in seen  # the trial forward (the memory estimate may try smaller probes first)
    assert max(np.prod(shape) for shape in seen) == np.prod(trial)
    segment = loaded.module.numpy_input_size
    assert np.prod(trial) * 5 < np.prod(segment), (trial, segment)  # the 189 x 162 x 162 segment took minutes
    for axis in range(3):  # and it is the smallest: one voxel less along any axis does not fit the network
        smaller = list(trial)
        smaller[axis] -= 1
        assert all(loaded.module.network.output_length(n, 2 - axis) is None for n in range(1, smaller[axis] + 1))
        with pytest.raises(ValueError, match="the smallest it takes is"):
            loaded.module(torch.zeros((1, 1) + tuple(smaller)))


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_equals_keras_on_a_real_ct_patch(models, name):
    loaded = models[name]
    assert loaded.card.class_names == ["background", "liver" if name == "liver-seg-3d" else "lesion"]
    folder = resolve_model_name(name)
    reference = np.load(folder / "reference.npz")
    hu = reference["hu_ras"]
    expected = reference["keras_probabilities"]
    assert expected.max() - expected.min() > 0.05  # a patch with structure, not a constant output
    # The card's intensity transform (what the pipeline feeds) on the stored HU patch.
    spec = loaded.card.input.intensity
    x = window(hu, *spec.window, to=spec.range)
    np.testing.assert_allclose(x, their_ct_normalisation(hu), atol=1e-6)
    with torch.no_grad():
        logit = loaded.module.network(torch.from_numpy(x)[None, None])[0, 0]
    ours = torch.sigmoid(logit).numpy()
    assert ours.shape == expected.shape == tuple(reference["output_size"])
    assert np.abs(ours - expected).max() <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_card_records_provenance_licence_and_notice(name):
    folder = resolve_model_name(name)
    card = load_card(folder)
    provenance = card.extra["provenance"]
    assert provenance["package"] == "pyliverlesionseg" and provenance["version"] == "0.3"
    assert provenance["file"].startswith("pyliverlesionseg/trained_models/") and provenance["file"].endswith(".hdf5")
    assert len(provenance["sha256"]) == 64 and provenance["licence"] == "Apache-2.0"
    assert provenance["keras_reference"]["max_abs_diff_probability"] <= 1e-4
    notice = (folder / provenance["notice"]).read_text(encoding="utf-8")
    assert "Apache License" in notice and provenance["sha256"] in notice and "Tang" in notice
    assert card.input.orientation == "LPS" and card.input.intensity.range == (-0.5, 0.5)


def test_window_range_is_their_ct_normalisation():
    from XAIExplainLib.models.preprocessing import apply_intensity

    card = load_card(resolve_model_name("liver-seg-3d"))
    hu = np.array([-3024.0, -1000.0, -200.0, -150.0, 0.0, 35.5, 199.9, 200.0, 3071.0], dtype=np.float32)
    np.testing.assert_allclose(apply_intensity(card, hu), their_ct_normalisation(hu), atol=1e-6)
    # the whole preparation (their zooms and median filter, test_liver_pipeline.py) on a uniform image: the
    # segment holds its normalised value where the image is and 0 (their extraction's default) beyond it
    image = np.full((4, 6, 8), 120.0, np.float32)
    out = prepare(card, image, spacing=(3.0, 3.0, 3.0))
    assert out.model_grid.shape == tuple(card.input.size)  # the fixed input segment
    # inner voxels keep 120 HU; edge voxels mix with the 0 beyond the image (zoom3d's cval)
    assert (np.isclose(out.array[0], their_ct_normalisation(120.0), atol=1e-6)).sum() >= 2 * 4 * 6
    assert (out.array[0] == 0).sum() >= out.array[0].size - 4 * 6 * 8


def test_bad_window_range_is_a_one_line_error():
    data = json.loads((resolve_model_name("liver-seg-3d") / "card.json").read_text())
    data["input"]["intensity"]["range"] = [0.5, -0.5]
    with pytest.raises(ModelCardError, match=r"input\.intensity\.range.*low < high"):
        ModelCard.from_dict(data, base_dir=resolve_model_name("liver-seg-3d"))
    data["input"]["orientation"] = "RAS"
    data["input"]["intensity"]["range"] = [-0.5, 0.5]
    with pytest.raises(ModelCardError, match=r"input\.orientation.*'LPS'"):
        ModelCard.from_dict(data, base_dir=resolve_model_name("liver-seg-3d"))


def test_non_lps_image_is_refused_with_how_to_reorient():
    card = load_card(resolve_model_name("liver-seg-3d"))
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # RAS-stored, as many NIfTI files
    with pytest.raises(ValueError, match="LPS.*DICOMOrient"):
        prepare(card, image)
    prepare(card, sitk.DICOMOrient(image, "LPS"))  # the advised fix works


def _small_net(name):
    """The bundled network with a small output segment: same weights, seconds on a CPU."""
    folder = resolve_model_name(name)
    card = load_card(folder)
    kwargs = dict(card.architecture.kwargs)
    kwargs["output_size"] = json.loads((folder / "card.json").read_text())["provenance"]["keras_reference"][
        "output_size_xyz"]
    net = LiverLesionNet(**kwargs)
    from XAIExplainLib.models.weights_io import read_state_dict

    net.load_state_dict(read_state_dict(card.weights.file))
    return net.eval()


@pytest.mark.parametrize("name", NAMES)
def test_output_placed_and_filled_as_their_deepvoxnet_predict(name, two_torch_threads):
    net = _small_net(name)
    sx, sy, sz = net.input_size
    rng = np.random.default_rng(0)
    ras = rng.uniform(-0.5, 0.5, size=(sx, sy, sz)).astype(np.float32)  # their (x, y, z) RAS order
    with torch.no_grad():
        z = net.network(torch.from_numpy(ras)[None, None])[0, 0].numpy()
        # our volume: numpy (z, y, x) on an LPS grid = their array transposed, x and y flipped
        lps = np.ascontiguousarray(np.flip(ras, (0, 1)).transpose(2, 1, 0))
        two = net(torch.from_numpy(lps)[None, None])[0].numpy()
    # their placement: the output segment centred on the input's centre voxel, NaN elsewhere,
    # then every NaN takes the nearest output voxel (DeepVoxNet.predict)
    full = np.full(ras.shape, np.nan, np.float32)
    start = [(i - o) // 2 for i, o in zip(ras.shape, z.shape)]
    full[tuple(slice(s, s + o) for s, o in zip(start, z.shape))] = z
    full = full[tuple(ndimage.distance_transform_edt(np.isnan(full), return_distances=False, return_indices=True))]
    theirs = np.ascontiguousarray(np.flip(full, (0, 1)).transpose(2, 1, 0))
    np.testing.assert_allclose(two[1], theirs / 2, atol=1e-6)
    np.testing.assert_allclose(two[0], -theirs / 2, atol=1e-6)
    # softmax of the two channels is their sigmoid
    probability = torch.softmax(torch.from_numpy(two), 0)[1].numpy()
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-theirs.astype(np.float64))), atol=1e-6)


def test_wrong_segment_size_is_a_clear_error():
    net = _small_net("liver-seg-3d")
    with pytest.raises(ValueError, match=r"input segments of \(54, 81, 81\) voxels"):
        net(torch.zeros(1, 1, 50, 81, 81))


def test_gradcam_of_the_liver_class_on_a_real_ct_patch(two_torch_threads):
    from XAIExplainLib.engine import SegmentationTarget, explain_volume

    net = _small_net("liver-seg-3d")
    reference = np.load(resolve_model_name("liver-seg-3d") / "reference.npz")
    lps = np.ascontiguousarray(np.flip(their_ct_normalisation(reference["hu_ras"]), (0, 1)).transpose(2, 1, 0))
    volume = lps.astype(np.float32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    maps, outputs = explain_volume(net, volume, ["gradcam"], mode="volume", layer="network.up.1",
                                   target=SegmentationTarget(1), return_outputs=True)
    liver = outputs.argmax(0) == 1
    assert liver.any() and (~liver).any()
    cam = maps["gradcam"]
    assert cam.shape == volume.shape and np.isfinite(cam).all() and cam.max() > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # left as found


def test_sample_data_offers_an_abdomen_for_the_liver_model():
    from XAIExplainLib.imaging.resample import Grid
    from XAIExplainLib.logic.sample_data import SAMPLES
    from XAIExplainLib.models.preprocessing import check_orientation

    spec = next(s for s in SAMPLES if s.model == "liver-seg-3d")
    image = spec.phantom(shape=(4, 16, 16), spacing=(5.0, 20.0, 20.0)).image()
    check_orientation(load_card(resolve_model_name("liver-seg-3d")), Grid.from_image(image))  # fits the card


def test_demo_offers_the_liver_model_and_refuses_others_in_one_line(tmp_path, capsys):
    from XAIExplainLib.cli.demo import DEMO_CHOICES
    from XAIExplainLib.cli.main import main
    from XAIExplainLib.models import list_models

    assert "liver-seg-3d" in DEMO_CHOICES and set(DEMO_CHOICES) <= {m.name for m in list_models()}
    out = tmp_path / "demo"
    assert main(["demo", "--model", "lung-nodule-2d", "--output-dir", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ct-phase-2d or liver-seg-3d" in err
    assert not out.exists()  # refused before anything was written


def test_lesion_network_runs_in_the_engines_sliding_windows(two_torch_threads):
    from XAIExplainLib.engine import predict_volume

    net = _small_net("liver-lesion-seg-3d")
    patch = net.numpy_input_size
    rng = np.random.default_rng(1)
    volume = rng.uniform(-0.5, 0.5, size=(patch[0], patch[1], patch[2] + 12)).astype(np.float32)  # two windows
    outputs = predict_volume(net, volume, mode="volume", patch_size=list(patch), overlap=0.25)
    assert outputs.shape == (2,) + volume.shape and np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs[0], -outputs[1], atol=1e-5)  # (-z/2, z/2) survives the blending
    # the first window alone is exactly the network on that window
    with torch.no_grad():
        first = net(torch.from_numpy(volume[None, None, :, :, : patch[2]]))[0].numpy()
    # float32 convolutions batched differently: agreement to 1e-4 (a misplaced window differs by O(1))
    np.testing.assert_allclose(outputs[:, :, :, :8], first[:, :, :, :8], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["liver-seg-3d", "liver-lesion-seg-3d"])
def test_the_bundled_cards_are_what_the_converter_writes(name):
    """Every field of a bundled card (the CT pipeline, its MR variant, the windows, the differences listed) is
    convert_liver's: the card cannot drift from the conversion that documents it."""
    import json

    from XAIExplainLib.models.liver_unet import LiverLesionNet
    from XAIExplainLib.models.search_paths import resolve_model_name
    from XAIExplainLib.models.training import convert_liver

    bundled = json.loads((resolve_model_name(name) / "card.json").read_text())
    spec = convert_liver.MODELS[name]
    net = LiverLesionNet(spec["output_size"], **spec["network"])
    provenance = bundled["provenance"]
    written = convert_liver.card_for(name, spec, net, list(reversed(bundled["input"]["spacing"])), provenance["sha256"],
                                     provenance["wheel_sha256"], bundled["weights"]["sha256"])
    written["provenance"]["keras_reference"] = provenance["keras_reference"]  # added by the Keras check
    assert written == bundled
