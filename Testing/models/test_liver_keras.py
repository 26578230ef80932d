"""The proof that the liver port is exact: their Keras graph, rebuilt from their own code.

Runs where Keras 3 and h5py are installed (``pip install -c Testing/constraints-cpu.txt
keras h5py``; Keras runs on its torch backend, no TensorFlow) and the pyliverlesionseg wheel
is on disk, named by ``XAIEXPLAIN_LIVER_WHEEL``::

    pip download --no-deps --python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3 -d wheels
    XAIEXPLAIN_LIVER_WHEEL=wheels/pyliverlesionseg-0.3-py3-none-any.whl pytest Testing/models/test_liver_keras.py

Nothing is downloaded at test time. ``bench/liver.py --verify WHEEL`` repeats the comparison
on full-size segments of real CT.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("h5py", reason="the Keras proof needs h5py (pip install h5py)")
os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("keras", reason="the Keras proof needs Keras 3 (pip install keras; torch backend)")

WHEEL = os.environ.get("XAIEXPLAIN_LIVER_WHEEL")
pytestmark = pytest.mark.skipif(not WHEEL or not Path(WHEEL).is_file(),
                                reason="set XAIEXPLAIN_LIVER_WHEEL to pyliverlesionseg-0.3-py3-none-any.whl "
                                       "(pip download --no-deps --python-version 3.6 --only-binary=:all: "
                                       "pyliverlesionseg==0.3)")


@pytest.mark.parametrize("name", ["liver-seg-3d", "liver-lesion-seg-3d"])
def test_port_equals_their_keras_model_on_real_ct(name, tmp_path, two_torch_threads):
    from safetensors.torch import load_file

    from XAIExplainLib.models.liver_unet import LiverLesionNet
    from XAIExplainLib.models.search_paths import resolve_model_name
    from XAIExplainLib.models.training import convert_liver
    from XAIExplainLib.models.training.liver_keras import build_keras_model, keras_probabilities

    spec = convert_liver.MODELS[name]
    # a fresh conversion gives exactly the bundled tensors
    convert_liver.convert(Path(WHEEL), tmp_path)
    fresh = load_file(str(tmp_path / name / "weights.safetensors"))
    bundled = load_file(str(resolve_model_name(name) / "weights.safetensors"))
    assert fresh.keys() == bundled.keys() and all(torch.equal(fresh[k], bundled[k]) for k in fresh)

    # their graph, their HDF5, Keras' loader, on the real-CT patch stored with the model
    import zipfile

    hdf5 = tmp_path / "original.h5"
    with zipfile.ZipFile(WHEEL) as archive:
        hdf5.write_bytes(archive.read(f"pyliverlesionseg/trained_models/{spec['hdf5']}"))
    reference = np.load(resolve_model_name(name) / "reference.npz")
    small = [int(v) for v in reference["output_size"]]
    model = build_keras_model(WHEEL, spec["network"], small, hdf5)
    hu = reference["hu_ras"]
    assert tuple(model.input_shape[1:4]) == hu.shape  # their input-size rule = ours
    expected = keras_probabilities(model, convert_liver.normalise_ct(hu))
    net = LiverLesionNet(small, **spec["network"])
    net.load_state_dict(bundled)
    with torch.no_grad():
        ours = torch.sigmoid(net.network(torch.from_numpy(convert_liver.normalise_ct(hu))[None, None]))[0, 0]
    assert np.abs(ours.numpy() - expected).max() <= 1e-4
    np.testing.assert_allclose(expected, reference["keras_probabilities"], atol=1e-5)
