"""MONAI bundles as models: the bundle's own network, preprocessing, inferer settings and inverse.

A bundle folder holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``)
and ``models/model.pt`` (a state dict, read with ``weights_only=True``) or
``models/model.ts`` (TorchScript). Its config instantiates arbitrary Python objects
(``_target_``) and evaluates expressions (``$...``), so reading it runs code: the
loader refuses without ``trust=True``.

The trust rule is the same for JSON and YAML configs: before trust, the config is only read as
data (to say what it would do); with trust, ``monai.bundle.ConfigParser`` (MONAI's own parser,
for either format) builds ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``
exactly as the bundle's own workflow would. The pipeline
(:class:`~.monai_bundle_pipeline.BundlePipeline`) feeds the image through the bundle's
preprocessing (its ``LoadImaged`` reads temporary NIfTI copies, one per input key or channel),
per slice for a 2D network, tells the engine the inferer's window size and overlap, and sends
results back with MONAI's ``Invertd`` and the applied transforms: the prediction through the
bundle's postprocessing (minus its activation, already applied, and minus any writer), every
heatmap as an extra key inverted with the same spatial transforms. A network whose output is a
class vector is a classifier (its prediction is the class probabilities; no inverse needed).
Class names come from ``metadata.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..engine.layers import default_layer
from ..engine.reading import select_output
from .card import ClassSpec, InputSpec, IntensitySpec, ModelCard, TargetLayers, WeightsSpec
from .errors import ModelCardError, UntrustedModelError, WeightsError
from .trust import fetch_options

KIND = "monai-bundle"
_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


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
    """The inference config read as plain data (nothing instantiated, no expression evaluated): JSON, or
    YAML with ``yaml.safe_load`` as MONAI's own ``ConfigParser.load_config_file`` reads it (no Python tags)."""
    if path.suffix == ".json":
        return _read_json(path)
    try:
        import yaml
    except ImportError as exc:
        from ..extras import install_hint

        raise ImportError(f"{path}: a YAML bundle config needs PyYAML: {install_hint('monai')}") from exc
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelCardError(f"{path}: cannot read the bundle config as YAML ({exc}); it must be plain YAML "
                             "data (MONAI reads it with yaml.safe_load, so Python tags are refused)") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: must hold a mapping of config items, got {type(data).__name__}")
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
    pipeline = _pipeline(parser, config, metadata)
    card = _card(pipeline, folder, source_weights, module, use_script, check)
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




def _pipeline(parser, config: Path, metadata: dict):
    from .monai_bundle_pipeline import BundlePipeline

    return BundlePipeline(config, metadata, _instantiate(parser, "preprocessing", config),
                          _optional(parser, "inferer", config), _optional(parser, "postprocessing", config))


def _card(pipeline, folder: Path, weights: Path, module, scripted: bool, check: bool = True) -> ModelCard:
    """A card synthesised from metadata.json, the parsed config and one probe forward.

    The probe (zeros of the inferer's window, or of the metadata's spatial shape) tells the
    task (a spatial output: segmentation; a class vector: classification), checks the class
    names against the network's output channels, and gives the engine's default layer. A 2D
    network runs per slice along the numpy axis 0 unless told otherwise.
    """
    meta_path = folder / "configs" / "metadata.json"
    outputs = pipeline.outputs.get(pipeline.pred_key)
    outputs = outputs if isinstance(outputs, dict) else {}
    shape, channels = pipeline.window, pipeline.channels
    from .working_memory import check_window_memory

    check_window_memory(module, channels, shape, f"{pipeline.config} (the inferer's roi_size)", gradients=False)
    probe = torch.zeros((1, channels) + shape)
    try:
        with torch.inference_mode():
            output = select_output(module(probe))
    except Exception as exc:  # noqa: BLE001 - report any failure of the dry run
        raise ModelCardError(f"{pipeline.config}: the network does not run on a {tuple(probe.shape)} input (from "
                             f"the inferer's roi_size and {meta_path.name}'s num_channels): {exc}") from exc
    n_out = int(output.shape[1]) if output.dim() >= 2 else 1
    channel_def = outputs.get("channel_def") or {}
    names = [str(channel_def[k]) for k in sorted(channel_def, key=int)] if channel_def else \
        [f"class {i}" for i in range(n_out)]
    if check and len(names) != n_out and not (pipeline.activation == "sigmoid" and n_out == len(names) - 1):
        raise ModelCardError(f"{meta_path}: network_data_format.outputs.{pipeline.pred_key}.channel_def names "
                             f"{len(names)} classes but the network outputs {n_out} channel(s)")
    default = None if scripted else default_layer(module, probe)
    return ModelCard(
        name=pipeline.name, task="segmentation" if output.dim() > 2 else "classification",
        spatial_dims=len(shape), slice_axis=0 if len(shape) == 2 else None,
        input=InputSpec(channels=channels, spacing=None, size=None, patch_size=pipeline.roi_size,
                        intensity=IntensitySpec("none"), pad_value=None,
                        channel_names=_input_channel_names(pipeline)),
        classes=tuple(ClassSpec(n) for n in names),
        weights=WeightsSpec(file=weights, format="torchscript" if scripted else "state_dict"),
        target_layers=TargetLayers(default=default, suggested=(default,) if default else ()),
        output_activation=pipeline.activation, description=str(pipeline.metadata.get("description", "")),
        version=str(pipeline.metadata.get("version", "")), folder=folder,
        extra={"kind": KIND, "config": str(pipeline.config)},
    )


def _input_channel_names(pipeline) -> tuple[str, ...] | None:
    """The names of a bundle's input channels, in channel order: metadata.json's ``channel_def`` of the
    network's input (``{"0": "T1c", "1": "T1", ...}``), else the keys of a bundle that loads one key per
    channel; None (``channel 0``, ``channel 1``, ...) when neither names every channel once."""
    described = pipeline.inputs.get(pipeline.image_key)
    channel_def = described.get("channel_def") if isinstance(described, dict) else None
    keys = [str(i) for i in range(pipeline.channels)]
    if isinstance(channel_def, dict) and sorted(map(str, channel_def)) == sorted(keys):
        names = tuple(str(channel_def[key]) for key in keys)
        if len(set(names)) == len(names):
            return names
    if pipeline.channels > 1 and len(pipeline.load_keys) == pipeline.channels:
        return tuple(pipeline.load_keys)
    return None
