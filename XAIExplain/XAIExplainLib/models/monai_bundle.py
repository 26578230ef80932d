"""MONAI bundles as models: the bundle's own network, preprocessing, inferer settings and inverse.

A bundle folder holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``)
and ``models/model.pt`` (a state dict, read with ``weights_only=True``) or
``models/model.ts`` (TorchScript). Its config instantiates arbitrary Python objects
(``_target_``) and evaluates expressions (``$...``), so reading it runs code: the
loader refuses without ``trust=True``.

With trust, ``monai.bundle.ConfigParser`` builds ``network_def``, ``preprocessing``,
``inferer`` and ``postprocessing`` exactly as the bundle's own workflow would. The
pipeline (:class:`BundlePipeline`) feeds the image through the bundle's preprocessing
(its ``LoadImaged`` reads a temporary NIfTI copy of the image, so the reader, the
orientation and the spacing are the bundle's), tells the engine the inferer's window
size and overlap, and sends results back with MONAI's ``Invertd`` and the image's own
applied transforms: the prediction through the bundle's postprocessing (minus its
activation, already applied, and minus any writer), and every heatmap as an extra key
inverted with the same spatial transforms (the image's interpolation mode, linear for a
bilinear ``Spacingd``). Class names come from ``metadata.json``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..engine.layers import default_layer
from ..engine.reading import select_output
from .card import ClassSpec, InputSpec, IntensitySpec, ModelCard, TargetLayers, WeightsSpec
from .errors import ModelCardError, UntrustedModelError, WeightsError
from .trust import fetch_options

KIND = "monai-bundle"
_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
_WRITERS = ("SaveImage", "SaveImaged")
_ACTIVATIONS = ("Activations", "Activationsd")


def _config_path(folder: Path) -> Path | None:
    return next((folder / "configs" / n for n in _CONFIG_NAMES if (folder / "configs" / n).is_file()), None)


def is_bundle(path) -> bool:
    """A folder with ``configs/metadata.json`` and ``configs/inference.json|yaml``."""
    folder = Path(path)
    return folder.is_dir() and (folder / "configs" / "metadata.json").is_file() and _config_path(folder) is not None


def _monai():
    try:
        import monai  # noqa: F401
        from monai.bundle import ConfigParser
    except ImportError as exc:
        from ..extras import install_hint

        raise ImportError(f"MONAI bundles need MONAI: {install_hint('monai')}") from exc
    return ConfigParser


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"{path}: cannot read the bundle file ({exc}); it must be valid JSON") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


def _read_config(path: Path) -> dict:
    """The inference config read as plain data (nothing instantiated, no expression evaluated)."""
    if path.suffix == ".json":
        return _read_json(path)
    try:
        import yaml
        data = yaml.safe_load(path.read_text())
    except Exception as exc:  # noqa: BLE001 - yaml is optional and raises its own errors
        raise ModelCardError(f"{path}: cannot read the bundle config ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: must hold a mapping of config items")
    return data


def load_bundle(path, *, trust: bool = False, check: bool = True, **options):
    """A :class:`LoadedModel` (kind "monai-bundle", on the CPU) from a bundle folder; see the module docstring.

    Checked before anything runs: the files exist, the config has ``network_def``
    (unless a TorchScript ``models/model.ts`` replaces it) and ``preprocessing``, and
    ``trust=True``. ``check`` verifies metadata.json's class names against the network's
    output channels. Bundles take no other options (``load_model`` moves the model to its device).
    """
    if options:
        raise TypeError(f"unknown option(s) {sorted(options)} for a MONAI bundle; it takes none (its config says "
                        "how to build and feed the network)")
    from .loaded import LoadedModel
    from .weights_io import apply_state_dict, file_sha256, read_state_dict

    folder = Path(path)
    config = _config_path(folder)
    if config is None or not (folder / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{folder}: not a MONAI bundle; it needs configs/metadata.json and "
                                "configs/inference.json (or inference.yaml)")
    metadata = _read_json(folder / "configs" / "metadata.json")
    data = _read_config(config)
    keys = set(data)
    weights = folder / "models" / "model.pt"
    scripted = folder / "models" / "model.ts"
    if not weights.is_file() and not scripted.is_file():
        raise FileNotFoundError(f"{folder / 'models'}: the bundle has neither model.pt (state dict) nor "
                                "model.ts (TorchScript); put the trained weights there")
    use_script = not weights.is_file() or "network_def" not in keys
    if "network_def" not in keys and not scripted.is_file():
        raise ModelCardError(f"{config}: has no 'network_def' (the network's _target_ and its arguments), so "
                             f"the network for {weights.name} cannot be built; add network_def to the config, "
                             "or export the network as models/model.ts (TorchScript)")
    if "preprocessing" not in keys:
        raise ModelCardError(f"{config}: has no 'preprocessing'; a bundle's inference config must say how an "
                             "image is loaded and prepared (LoadImaged, Orientationd, Spacingd, ...)")
    if not trust:
        fetching = fetch_options(data.get("network_def")) if isinstance(data.get("network_def"), dict) else []
        also = (f"; its network_def also sets {', '.join(fetching)}, which would download weights into a cache "
                "outside the bundle") if fetching else ""
        raise UntrustedModelError(
            f"{config}: a MONAI bundle config instantiates arbitrary Python objects (_target_) and evaluates "
            f"expressions ($...), which runs code on this machine{also}; load it with trust=True (--trust-model) "
            "only if you trust where the bundle came from")
    parser = _parser(folder, config)
    if use_script:
        try:
            module = torch.jit.load(str(scripted), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch.jit raises RuntimeError and C++ errors
            raise WeightsError(f"{scripted}: cannot load the TorchScript archive ({exc})") from exc
        source_weights = scripted
    else:
        module = _instantiate(parser, "network_def", config)
        if not isinstance(module, torch.nn.Module):
            raise ModelCardError(f"{config}: network_def builds a {type(module).__name__}, not a torch.nn.Module")
        apply_state_dict(module, read_state_dict(weights), weights)
        source_weights = weights
    module.eval()
    pipeline = BundlePipeline(parser, config, metadata)
    card = pipeline.card(folder, source_weights, module, use_script, check)
    return LoadedModel(module=module, card=card, scripted=use_script, kind=KIND, source=folder,
                       weights_sha256=file_sha256(source_weights), pipeline=pipeline)


def _parser(folder: Path, config: Path):
    ConfigParser = _monai()
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        parser.read_meta(str(folder / "configs" / "metadata.json"))
    except Exception as exc:  # noqa: BLE001 - report any parse failure with the file
        raise ModelCardError(f"{config}: MONAI cannot parse the bundle config ({exc})") from exc
    parser["bundle_root"] = str(folder)
    return parser


def _instantiate(parser, key: str, config: Path):
    """One config item built by MONAI; a failure names the file and the item."""
    try:
        return parser.get_parsed_content(key, instantiate=True)
    except Exception as exc:  # noqa: BLE001 - MONAI re-raises whatever the target raised
        raise ModelCardError(f"{config}: MONAI cannot build '{key}' ({exc})") from exc


def _optional(parser, key: str, config: Path):
    return _instantiate(parser, key, config) if key in parser else None


def _transforms(compose) -> list:
    return list(getattr(compose, "transforms", [compose])) if compose is not None else []


class BundlePipeline:
    """The bundle's preprocessing, inferer settings and inverse, as the engine's pipeline."""

    def __init__(self, parser, config: Path, metadata: dict):
        self.config, self.metadata = config, metadata
        self.preprocessing = _instantiate(parser, "preprocessing", config)
        self.inferer = _optional(parser, "inferer", config)
        self.postprocessing = _optional(parser, "postprocessing", config)
        inputs = metadata.get("network_data_format", {}).get("inputs", {})
        self.image_key = next(iter(inputs), "image")
        outputs = metadata.get("network_data_format", {}).get("outputs", {})
        self.pred_key = next(iter(outputs), "pred")
        self.activation = self._activation()

    def _activation(self) -> str:
        for transform in _transforms(self.postprocessing):
            if type(transform).__name__ in _ACTIVATIONS:  # Activationsd keeps one flag per key
                if any(np.atleast_1d(getattr(transform, "softmax", False))):
                    return "softmax"
                if any(np.atleast_1d(getattr(transform, "sigmoid", False))):
                    return "sigmoid"
        return "softmax" if self.postprocessing is None else "none"

    # -- what the engine needs ------------------------------------------------------------
    def volume_options(self) -> dict:
        """The inferer's window, overlap and blending weights (MONAI's own importance map for its
        mode and sigma) for explain_volume; the whole volume without a sliding-window inferer."""
        roi = getattr(self.inferer, "roi_size", None)
        if roi is None:
            return {}
        from monai.data.utils import compute_importance_map
        patch = tuple(int(r) for r in roi)
        weights = compute_importance_map(patch, mode=getattr(self.inferer, "mode", "constant"),
                                         sigma_scale=getattr(self.inferer, "sigma_scale", 0.125))
        return {"patch_size": patch, "overlap": float(getattr(self.inferer, "overlap", 0.25)),
                "window_weights": weights.float()}

    def prepare(self, image, slice_axis=None, spacing=None,
                memory_budget_mb: float | None = None) -> "PreparedBundleInput":
        """Run the bundle's preprocessing on ``image`` (a ``SimpleITK.Image``; a bundle's network is volumetric,
        so there is no slice axis, and the image's own spacing is the one its Spacingd reads).

        ``memory_budget_mb`` (or the memory available) bounds the grid of the bundle's ``Spacingd``, checked
        before its preprocessing runs."""
        if not isinstance(image, sitk.Image):
            raise TypeError(f"a MONAI bundle reads its input with its own LoadImaged, which needs the image's "
                            f"geometry: pass a SimpleITK.Image, got {type(image).__name__}")
        if spacing is not None:
            raise TypeError("a MONAI bundle takes a SimpleITK.Image, whose spacing it reads; spacing= does not apply")
        self._check_grid(image, memory_budget_mb)
        with tempfile.TemporaryDirectory(prefix="xaiexplain-bundle-") as folder:
            path = str(Path(folder) / "image.nii")
            sitk.WriteImage(image, path)
            data = self.preprocessing({self.image_key: path})
            tensor = data[self.image_key]
            tensor = tensor.clone() if isinstance(tensor, torch.Tensor) else torch.as_tensor(np.asarray(tensor))
        data[self.image_key] = tensor
        return PreparedBundleInput(self, data, image)

    def _check_grid(self, image: sitk.Image, memory_budget_mb: float | None) -> None:
        """The grid the bundle's ``Spacingd`` resamples to (the image's extent at its ``pixdim``) against the
        budget; a bundle without ``Spacingd`` keeps the image's own grid."""
        from .preprocessing import check_model_grid_bytes

        size = np.asarray(image.GetSize(), dtype=float)  # SimpleITK (x, y, z) order from here on
        spacing = np.asarray(image.GetSpacing(), dtype=float)
        target = spacing
        for transform in _transforms(self.preprocessing):
            pixdim = getattr(getattr(transform, "spacing_transform", None), "pixdim", None)
            if pixdim is not None and np.asarray(pixdim).size == 3 and np.all(np.asarray(pixdim, dtype=float) > 0):
                # pixdim is per world axis (x, y, z) of the RAS-oriented tensor: each image axis takes the
                # pixdim of the world axis its direction is closest to
                world = np.abs(np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)).argmax(axis=0)
                target = np.asarray(pixdim, dtype=float).ravel()[world]
        new_size = np.ceil(size * spacing / target - 1e-6).astype(np.int64)
        check_model_grid_bytes(f"MONAI bundle '{self.metadata.get('name', self.config.parent.parent.name)}'",
                               int(image.GetNumberOfComponentsPerPixel()), size[::-1].astype(np.int64),
                               spacing[::-1], new_size[::-1], target[::-1], memory_budget_mb)

    def card(self, folder: Path, weights: Path, module, scripted: bool, check: bool = True) -> ModelCard:
        """A card synthesised from metadata.json, the parsed config and one probe forward.

        The probe (zeros of the inferer's window, or of the metadata's spatial shape) tells the
        task (spatial output: segmentation), checks the class names against the network's
        output channels, and gives the engine's default layer.
        """
        meta_path = folder / "configs" / "metadata.json"
        fmt = self.metadata.get("network_data_format", {})
        inputs = fmt.get("inputs", {}).get(self.image_key, {})
        outputs = fmt.get("outputs", {}).get(self.pred_key, {})
        roi = getattr(self.inferer, "roi_size", None)
        roi = tuple(int(r) for r in roi) if roi is not None else None
        shape = roi or tuple(int(s) for s in inputs.get("spatial_shape", ()))
        if len(shape) not in (2, 3):
            raise ModelCardError(f"{meta_path}: network_data_format.inputs.{self.image_key}.spatial_shape must give "
                                 "2 or 3 sizes when the config's inferer has no roi_size, got "
                                 f"{inputs.get('spatial_shape')!r}")
        channels = int(inputs.get("num_channels", 1))
        from .working_memory import check_window_memory

        check_window_memory(module, channels, shape, f"{self.config} (the inferer's roi_size)", gradients=False)
        probe = torch.zeros((1, channels) + shape)
        try:
            with torch.inference_mode():
                output = select_output(module(probe))
        except Exception as exc:  # noqa: BLE001 - report any failure of the dry run
            raise ModelCardError(f"{self.config}: the network does not run on a {tuple(probe.shape)} input (from "
                                 f"the inferer's roi_size and {meta_path.name}'s num_channels): {exc}") from exc
        n_out = int(output.shape[1]) if output.dim() >= 2 else 1
        channel_def = outputs.get("channel_def") or {}
        names = [str(channel_def[k]) for k in sorted(channel_def, key=int)] if channel_def else \
            [f"class {i}" for i in range(n_out)]
        if check and len(names) != n_out and not (self.activation == "sigmoid" and n_out == len(names) - 1):
            raise ModelCardError(f"{meta_path}: network_data_format.outputs.{self.pred_key}.channel_def names "
                                 f"{len(names)} classes but the network outputs {n_out} channel(s)")
        default = None if scripted else default_layer(module, probe)
        return ModelCard(
            name=str(self.metadata.get("name", folder.name)),
            task="segmentation" if output.dim() > 2 else "classification", spatial_dims=len(shape),
            input=InputSpec(channels=channels, spacing=None, size=None, patch_size=roi,
                            intensity=IntensitySpec("none"), pad_value=None,
                            channel_names=_input_channel_names(inputs, channels)),
            classes=tuple(ClassSpec(n) for n in names),
            weights=WeightsSpec(file=weights, format="torchscript" if scripted else "state_dict"),
            target_layers=TargetLayers(default=default, suggested=(default,) if default else ()),
            output_activation=self.activation, description=str(self.metadata.get("description", "")),
            version=str(self.metadata.get("version", "")), folder=folder,
            extra={"kind": KIND, "config": str(self.config)},
        )

    # -- inverse ----------------------------------------------------------------------------
    def invert(self, data: dict, key: str, value: np.ndarray):
        """``value`` (C, *model grid) back through the image's applied transforms (MONAI Invertd)."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd
        item = dict(data)
        item[key] = MetaTensor(torch.as_tensor(np.asarray(value, dtype=np.float32)))
        inverted = Invertd(keys=key, transform=self.preprocessing, orig_keys=self.image_key,
                           nearest_interp=False, to_tensor=True)(item)
        return inverted[key]

    def postprocess(self, data: dict, probabilities: np.ndarray):
        """The bundle's postprocessing on activated outputs, without its activation and writers."""
        from monai.transforms import AsDiscreted, Compose, Invertd
        from monai.data import MetaTensor
        kept = [t for t in _transforms(self.postprocessing) if type(t).__name__ not in _WRITERS + _ACTIVATIONS]
        if not kept:
            kept = [Invertd(keys=self.pred_key, transform=self.preprocessing, orig_keys=self.image_key,
                            nearest_interp=False, to_tensor=True), AsDiscreted(keys=self.pred_key, argmax=True)]
        item = dict(data)
        item[self.pred_key] = MetaTensor(torch.as_tensor(np.asarray(probabilities, dtype=np.float32)))
        return Compose(kept)(item)[self.pred_key]


class PreparedBundleInput:
    """The preprocessed image (``array``: float32 (C, *model grid), the network's own axis order)
    and the way back onto the input image's grid."""

    def __init__(self, pipeline: BundlePipeline, data: dict, image: sitk.Image):
        self.pipeline, self.data, self.image = pipeline, data, image
        self.array = np.ascontiguousarray(np.asarray(data[pipeline.image_key].detach().cpu(), dtype=np.float32))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def _on_input_grid(self, channels_first: torch.Tensor) -> np.ndarray:
        """(C, X, Y, Z) as LoadImaged read the image -> numpy (C, Z, Y, X) of the SimpleITK image."""
        array = np.asarray(torch.as_tensor(channels_first).detach().cpu(), dtype=np.float32)
        out = np.ascontiguousarray(np.transpose(array, (0,) + tuple(range(array.ndim - 1, 0, -1))))
        expected = tuple(reversed(self.image.GetSize()))
        if out.shape[1:] != expected:
            raise ValueError(f"the bundle's inverse gave shape {out.shape[1:]}, not the input's {expected}; its "
                             "preprocessing has a transform Invertd cannot undo (e.g. a crop without inverse)")
        return out

    def _model_reference(self) -> sitk.Image:
        """An empty image on the model grid, from the preprocessed tensor's (RAS) affine.

        SimpleITK index (x, y, z) is the tensor's spatial index (axis 1, 2, 3), so
        ``GetArrayFromImage`` of an image on this grid is the tensor's layout reversed.
        """
        affine = np.asarray(self.data[self.pipeline.image_key].affine, dtype=np.float64)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        reference = sitk.Image([int(n) for n in self.spatial_shape], sitk.sitkUInt8)
        reference.SetSpacing(spacing.tolist())
        reference.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
        reference.SetOrigin(lps[:3, 3].tolist())
        return reference

    def region_to_model_grid(self, mask: np.ndarray) -> np.ndarray:
        """A boolean region (z, y, x) on the input image -> the same region on the model grid (nearest voxel;
        a region thinner than a model voxel keeps the model voxel nearest to its centre)."""
        mask = np.asarray(mask).astype(bool)
        expected = tuple(reversed(self.image.GetSize()))
        if mask.shape != expected:
            raise ValueError(f"the target region mask has shape {mask.shape} but the image is {expected} "
                             "(z, y, x); give the mask on the image's own grid")
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(self.image)
        moved = sitk.Resample(image, self._model_reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        out = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(moved), (2, 1, 0))).astype(bool)
        if not out.any() and mask.any():
            out[self.voxel_to_model_grid(tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0)))] = True
        return out

    def voxel_to_model_grid(self, voxel) -> tuple[int, ...]:
        """A voxel (z, y, x) of the input image -> the nearest voxel (tensor axis order) of the model grid."""
        point = self.image.TransformContinuousIndexToPhysicalPoint([float(v) for v in reversed(tuple(voxel))])
        index = self._model_reference().TransformPhysicalPointToIndex(point)
        return tuple(min(max(int(i), 0), n - 1) for i, n in zip(index, self.spatial_shape))

    def _image(self, array: np.ndarray, pixel) -> sitk.Image:
        image = sitk.GetImageFromArray(array.astype(pixel))
        image.CopyInformation(self.image)
        return image

    def restore_map(self, array: np.ndarray, clamp: bool = True) -> sitk.Image:
        """A map on the model grid -> float32 image on the input grid (the image's own inverse)."""
        restored = self._on_input_grid(self.pipeline.invert(self.data, "xaiexplain_map", np.asarray(array)[None]))[0]
        if clamp:
            restored = np.clip(restored, 0.0, 1.0)
        return self._image(restored, np.float32)

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """(K, *model grid) probabilities -> (K, Z, Y, X) on the input grid."""
        return self._on_input_grid(self.pipeline.invert(self.data, self.pipeline.pred_key, probabilities))

    def restore_labels(self, probabilities: np.ndarray, activation: str = "softmax") -> sitk.Image:
        """Label image on the input grid from the bundle's postprocessing of the probabilities."""
        labels = self._on_input_grid(self.pipeline.postprocess(self.data, probabilities))
        if labels.shape[0] != 1:  # postprocessing left channels: decide as the card pipeline does
            from .preprocessing import decide_labels
            labels = decide_labels(labels, activation)[None]
        return self._image(np.rint(labels[0]), np.uint8)


def _input_channel_names(inputs: dict, channels: int) -> tuple[str, ...] | None:
    """The image's ``channel_def`` of metadata.json (``{"0": "T1c", "1": "T1", ...}``), one name per input
    channel in channel order; None when it names none or does not name every channel once."""
    channel_def = inputs.get("channel_def")
    if not isinstance(channel_def, dict) or sorted(map(str, channel_def)) != sorted(map(str, range(channels))):
        return None
    names = tuple(str(channel_def.get(str(i), channel_def.get(i))) for i in range(channels))
    return names if len(set(names)) == channels else None
