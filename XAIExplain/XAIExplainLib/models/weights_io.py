"""Read weights without executing code, check their checksums, and load them into a network.

Safetensors files, or ``torch.load(..., weights_only=True)`` for state_dicts;
a pickled full module or a TorchScript archive only where the caller's trust
check allowed it (:mod:`models.trust`). Every failure names the file and what
was wrong: a corrupt or truncated archive, a checksum mismatch, weights whose
names or shapes do not fit the architecture. Shared by every model form.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .errors import UntrustedModelError, WeightsError, first_line
from .weight_integrity import check_finite_weights, check_weight_dtypes


def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip with a ``code/`` folder (what ``torch.jit.save`` writes)."""
    if not Path(path).is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a ``torch.save``d state_dict, without unpickling code."""
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: holds pickled Python objects other than tensors, which weights_only "
            "loading refuses. If it is a full module saved with torch.save(model), re-save "
            "model.state_dict() (or safetensors), or set the card's weights.format to "
            "'pickle' and load with trust=True if you trust its source") from exc
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad bytes
        if "TorchScript" in str(exc):
            raise WeightsError(f"{path}: is a TorchScript archive; set the card's weights.format "
                               "to 'torchscript'") from exc
        raise WeightsError(f"{path}: cannot read the weights ({first_line(exc)}); the file is "
                           "corrupt or truncated, or not a PyTorch state_dict") from exc
    return _unwrap_state_dict(data, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ImportError(f"{path}: reading safetensors files needs the 'safetensors' package "
                          "(pip install safetensors)") from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path}: cannot read the safetensors file ({first_line(exc)}); "
                           "the file is corrupt or truncated") from exc


def _unwrap_state_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(data, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                data = inner
                break
        if data and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
            return dict(data)
    raise WeightsError(f"{path}: expected a state_dict (a mapping of parameter names to tensors, "
                       f"possibly under 'state_dict' or 'model'), got {type(data).__name__}")


def apply_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path,
                     hint: str = "check the card's architecture.kwargs") -> None:
    """Strict load with a readable account of missing, unexpected and mis-shaped tensors; ``hint`` says what to check."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file: " + ", ".join(missing[:5]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s): " + ", ".join(unexpected[:5]))
        raise WeightsError(f"{path}: weights do not fit the architecture {type(module).__name__} "
                           f"({hint}): " + " | ".join(parts))
    check_weight_dtypes(state, expected, path)
    check_finite_weights(state, path, expected)
    module.load_state_dict(state, strict=True)


def load_torchscript_archive(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.jit raises RuntimeError and C++ errors
        raise WeightsError(f"{path}: cannot load the TorchScript archive ({first_line(exc)}); the "
                           "file is corrupt or truncated, or not TorchScript") from exc


def load_pickled_module(path: Path, trust: bool) -> nn.Module:
    if not trust:
        raise UntrustedModelError(
            f"{path}: is a pickled full module; unpickling it can run arbitrary code on this "
            "machine. Load it with trust=True only if you trust where it came from, or convert "
            "it to a state_dict/safetensors file with an architecture entry in the card")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot unpickle the module ({first_line(exc)}); the file is "
                           "corrupt or truncated") from exc
    if not isinstance(obj, nn.Module):
        raise WeightsError(f"{path}: expected a pickled torch.nn.Module, got {type(obj).__name__}")
    return obj


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsError(f"{path}: SHA-256 is {actual} but the card expects {expected}; the "
                           "file is corrupt, truncated or not the one the card was written for")
