"""The independent reference for the liver port: their own Keras code, run by Keras 3.

``pyliverlesionseg`` builds its networks with ``create_unet_like_model`` from
``architectures/unet_generalized.py`` (Keras 2.2 imports).  This module runs *that
function from the wheel itself* under Keras 3 (``KERAS_BACKEND=torch``, no TensorFlow),
loads the original HDF5 weights with Keras' own loader and predicts, so the torch port
(:mod:`XAIExplainLib.models.liver_unet`) is compared with their graph, not with a second
reading of it.  Only the Keras 2 import paths are adapted, inside :func:`_keras2_names`:

* ``keras.layers.convolutional`` / ``advanced_activations`` / ``normalization`` are gone
  in Keras 3: the same layer classes are offered under those names;
* ``keras.backend`` no longer has ``mean``, ``std`` and ``int_shape``: ``keras.ops.mean``,
  ``keras.ops.std`` (population, as TensorFlow's ``reduce_std``) and the tensor's shape
  stand in;
* pooling and upsampling sizes arrive as numpy arrays (some of floats): cast to ints.

Needs ``pip install keras h5py`` (the ``liver-verify`` extra) and the wheel
(``pip download --no-deps --python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3``).
Verification tooling only: the bundled models never import Keras.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np

ARCHITECTURE_FILE = "pyliverlesionseg/architectures/unet_generalized.py"


def _ints(value):
    return tuple(int(v) for v in np.atleast_1d(np.asarray(value)))


@contextlib.contextmanager
def _keras2_names():
    """Keras 2.2's module names for the duration of a build (see the module notes)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras import layers, ops

    def pooling(cls):
        def make(pool_size, strides=None, **kwargs):
            return cls(_ints(pool_size), None if strides is None else _ints(strides), **kwargs)
        return make

    def upsampling(size, **kwargs):
        return layers.UpSampling3D(_ints(size), **kwargs)

    def input_layer(shape, **kwargs):
        return keras.Input(shape=tuple(int(v) for v in shape), **kwargs)

    fake = types.ModuleType("keras")
    fake_layers = types.ModuleType("keras.layers")
    for name in ("Dropout", "Concatenate", "Multiply", "Add", "Reshape", "Lambda"):
        setattr(fake_layers, name, getattr(layers, name))
    fake_layers.Input = input_layer
    fake_layers.MaxPooling3D = pooling(layers.MaxPooling3D)
    fake_layers.AveragePooling3D = pooling(layers.AveragePooling3D)
    convolutional = types.ModuleType("keras.layers.convolutional")
    convolutional.Conv3D, convolutional.Cropping3D = layers.Conv3D, layers.Cropping3D
    convolutional.UpSampling3D = upsampling
    advanced = types.ModuleType("keras.layers.advanced_activations")
    advanced.LeakyReLU = lambda alpha=0.3, **kw: layers.LeakyReLU(negative_slope=alpha, **kw)
    advanced.PReLU = layers.PReLU
    normalization = types.ModuleType("keras.layers.normalization")
    normalization.BatchNormalization = layers.BatchNormalization
    backend = types.ModuleType("keras.backend")
    backend.mean = lambda x, axis=None, keepdims=False: ops.mean(x, axis=axis, keepdims=keepdims)
    backend.std = lambda x, axis=None, keepdims=False: ops.std(x, axis=axis, keepdims=keepdims)
    backend.epsilon = keras.backend.epsilon
    backend.int_shape = lambda x: tuple(x.shape)
    models = types.ModuleType("keras.models")
    models.Model = keras.Model
    fake.layers, fake.backend, fake.models, fake.regularizers = fake_layers, backend, models, keras.regularizers
    names = {"keras": fake, "keras.layers": fake_layers, "keras.layers.convolutional": convolutional,
             "keras.layers.advanced_activations": advanced, "keras.layers.normalization": normalization,
             "keras.backend": backend, "keras.models": models}
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def architecture_module(wheel: str | Path):
    """``unet_generalized.py`` read from the wheel and imported as a module of its own."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(ARCHITECTURE_FILE)
    folder = Path(tempfile.mkdtemp(prefix="pyliverlesionseg-"))
    path = folder / "unet_generalized.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("pyliverlesionseg_unet_generalized", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # their `x is "literal"` comparisons (true for interned strings)
        warnings.simplefilter("ignore", SyntaxWarning)
        spec.loader.exec_module(module)
    return module


def build_keras_model(wheel: str | Path, keras_kwargs: dict, output_size, hdf5: str | Path):
    """Their network with ``output_size`` (their x, y, z order), their weights loaded by Keras."""
    module = architecture_module(wheel)
    with _keras2_names(), contextlib.redirect_stdout(io.StringIO()):
        model = module.create_unet_like_model(output_size=list(output_size), verbose=False, **keras_kwargs)
    model.load_weights(str(hdf5))
    return model


def keras_probabilities(model, patch: np.ndarray) -> np.ndarray:
    """Probabilities ``(x, y, z)`` of a patch ``(x, y, z)`` (their RAS order, normalised)."""
    batch = np.asarray(patch, dtype=np.float32)[None, ..., None]
    out = model.predict(batch, verbose=0)
    return np.asarray(out)[0, ..., 0]
