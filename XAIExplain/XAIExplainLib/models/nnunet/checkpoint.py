"""Read nnU-Net checkpoints as untrusted data.

A checkpoint nnU-Net saves is a pickle holding ``network_weights`` (the state dict),
``init_args`` (plans, configuration, fold, dataset.json, device), ``trainer_name``,
``inference_allowed_mirroring_axes``, the optimizer state and the training log. All of it
is tensors, containers, strings, numbers and a ``torch.device`` except that the log holds
numpy scalars (losses, Dice values), so ``torch.load(weights_only=True)`` alone refuses
real checkpoints. Numpy scalars and dtypes are plain data, so they are the one addition
allowed; any other object (a pickled class, a function) needs full unpickling, which can
run code, and is refused unless ``trust=True``.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import UntrustedModelError, WeightsError

REQUIRED_KEYS = ("network_weights", "trainer_name", "init_args")


def _numpy_data_globals() -> list:
    """The numpy globals that rebuild scalars: the reconstructor, ``numpy.dtype`` and the dtype classes."""
    reconstruct = getattr(getattr(np, "_core", np.core), "multiarray").scalar
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
    return [reconstruct, np.dtype, *dict.fromkeys(dtype_classes)]


def _needs_unpickling(path: Path) -> list[str]:
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_data_globals()}
        return [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
                if name not in allowed]
    except Exception:  # noqa: BLE001 - listing is only for the message
        return []


def read_checkpoint(path: Path, trust: bool = False, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's dictionary, read without running code unless ``trust`` is given.

    ``mmap`` maps the tensors instead of reading them (the fields alone are wanted).
    """
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if not trust:
            objects = _needs_unpickling(path)
            listed = f" ({', '.join(objects[:5])})" if objects else ""
            raise UntrustedModelError(
                f"{path}: this checkpoint holds pickled Python objects{listed} besides tensors, numbers and "
                "strings; unpickling them can run arbitrary code on this machine. Load it with trust=True "
                "(--trust-model) only if you trust where it came from") from exc
        data = _full_unpickle(path)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad bytes
        raise WeightsError(f"{path}: cannot read the checkpoint ({str(exc).strip().splitlines()[0]}); the file "
                           "is corrupt or truncated, or not an nnU-Net checkpoint") from exc
    return _checked(data, path)


def _full_unpickle(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot unpickle the checkpoint ({str(exc).strip().splitlines()[0]}); "
                           "the file is corrupt or truncated") from exc


def _checked(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise WeightsError(f"{path}: expected an nnU-Net checkpoint (a dictionary with {', '.join(REQUIRED_KEYS)}), "
                           f"got {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise WeightsError(f"{path}: not an nnU-Net v2 checkpoint: key(s) {', '.join(missing)} missing (it has "
                           f"{', '.join(map(str, list(data)[:8]))}); nnU-Net's trainer writes these")
    weights = data["network_weights"]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise WeightsError(f"{path}: 'network_weights' is not a state dict of tensors")
    init_args = data["init_args"]
    if not isinstance(init_args, Mapping) or not isinstance(init_args.get("configuration"), str):
        raise WeightsError(f"{path}: 'init_args' has no 'configuration' name; the checkpoint does not say which "
                           "plans configuration it was trained with")
    if not isinstance(data["trainer_name"], str):
        raise WeightsError(f"{path}: 'trainer_name' must be a string, got {type(data['trainer_name']).__name__}")
    return dict(data)


def mirroring_axes(checkpoint: Mapping[str, Any]) -> tuple[int, ...]:
    """The axes nnU-Net may mirror at inference (none recorded: none)."""
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return tuple(int(a) for a in axes) if axes else ()
