"""Recognise an nnU-Net v2 trained-model folder and read what it holds, checking it against the options.

A trained-model folder (``nnUNetTrainer__nnUNetPlans__3d_fullres``) holds ``dataset.json``,
``plans.json`` and one ``fold_N`` (or ``fold_all``) folder per trained fold with
``checkpoint_final.pth`` and/or ``checkpoint_best.pth``. Everything is checked before a
network is built, and every error names the file and what to do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelCardError
from ..trust import check_inside

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")


def is_nnunet_folder(path) -> bool:
    """A folder with ``dataset.json`` or ``plans.json`` next to ``fold_*`` folders (no card.json)."""
    path = Path(path)
    if not path.is_dir() or (path / "card.json").is_file():
        return False
    has_json = (path / "plans.json").is_file() or (path / "dataset.json").is_file()
    return has_json and any(p.is_dir() for p in path.glob("fold_*"))


@dataclass(frozen=True)
class NnUNetFolder:
    """The parsed folder: its JSON files and the checkpoint file of every fold used."""

    path: Path
    dataset_json: dict
    plans: dict
    checkpoints: dict  # fold (int or "all") -> Path

    @property
    def folds(self) -> tuple:
        return tuple(self.checkpoints)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: an nnU-Net v2 trained-model folder holds {what}; point to "
                                "the folder nnU-Net trained into (e.g. nnUNetTrainer__nnUNetPlans__3d_fullres)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: not valid JSON ({exc}); restore the file nnU-Net wrote") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _fold_name(fold) -> str:
    return "fold_all" if fold == "all" else f"fold_{fold}"


def _parse_folds(folds, path: Path) -> list | None:
    if folds is None:
        return None
    items = [folds] if isinstance(folds, (int, str)) else list(folds)
    out = []
    for fold in items:
        if fold == "all" or (isinstance(fold, int) and not isinstance(fold, bool) and fold >= 0):
            out.append(fold)
        elif isinstance(fold, str) and fold.isdigit():
            out.append(int(fold))
        else:
            raise ValueError(f"folds must be fold numbers (0, 1, ...) or 'all', got {folds!r}")
    if not out:
        raise ValueError(f"folds is empty; give at least one fold of {path} or leave folds=None (every fold)")
    return list(dict.fromkeys(out))


def _available(path: Path, checkpoint: str) -> list:
    found = []
    for sub in sorted(path.glob("fold_*")):
        suffix = sub.name[len("fold_"):]
        if sub.is_dir() and (sub / checkpoint).is_file() and (suffix.isdigit() or suffix == "all"):
            found.append(int(suffix) if suffix.isdigit() else "all")
    numbered = sorted(f for f in found if f != "all")
    return numbered or [f for f in found if f == "all"]


def read_folder(path, folds: Sequence | int | None = None, checkpoint: str = "checkpoint_final.pth",
                trust: bool = False) -> NnUNetFolder:
    """Read and check a trained-model folder; ``folds=None`` uses every numbered fold that has ``checkpoint``.

    Like nnU-Net's predictor, ``fold_all`` is used by default only when no numbered fold exists.
    plans.json, dataset.json and the checkpoints must lie inside the folder (a link leading out
    of it needs ``trust``: the rule of :func:`models.trust.check_inside`, as for every form).
    """
    path = Path(path)
    if not isinstance(checkpoint, str) or checkpoint not in CHECKPOINT_NAMES and not checkpoint.endswith(".pth"):
        raise ValueError(f"checkpoint must be a checkpoint file name such as {' or '.join(CHECKPOINT_NAMES)}, "
                         f"got {checkpoint!r}")
    if not path.is_dir():
        raise FileNotFoundError(f"nnU-Net model folder not found: {path}")
    for name in ("plans.json", "dataset.json"):
        if (path / name).exists():
            check_inside(path / name, path, trust, str(path), name)
    plans = _read_json(path / "plans.json", "plans.json (the configurations nnU-Net planned)")
    dataset_json = _read_json(path / "dataset.json", "dataset.json (channels and labels)")
    for key in ("labels", "channel_names"):
        if not isinstance(dataset_json.get(key), dict):
            raise ModelCardError(f"{path / 'dataset.json'}: field '{key}' is missing or not an object; nnU-Net "
                                 "writes it when the dataset is planned")
    if not isinstance(plans.get("configurations"), dict) or not plans["configurations"]:
        raise ModelCardError(f"{path / 'plans.json'}: field 'configurations' is missing or empty; restore the "
                             "plans.json nnU-Net wrote for this model")
    wanted = _parse_folds(folds, path)
    if wanted is None:
        wanted = _available(path, checkpoint)
        if not wanted:
            present = sorted(p.name for p in path.glob("fold_*/*.pth"))
            raise FileNotFoundError(f"{path}: no fold_N/{checkpoint} found (checkpoints present: "
                                    f"{', '.join(present) or 'none'}); pass checkpoint= with one that exists")
    checkpoints = {}
    for fold in wanted:
        file = path / _fold_name(fold) / checkpoint
        if not file.is_file():
            have = ", ".join(str(f) for f in _available(path, checkpoint)) or "none"
            raise FileNotFoundError(f"{file} does not exist: fold {fold} has no {checkpoint} (folds with it: "
                                    f"{have}); pass folds= and checkpoint= that the folder holds")
        check_inside(file, path, trust, str(path), "checkpoint")
        checkpoints[fold] = file
    return NnUNetFolder(path, dataset_json, plans, checkpoints)


def plans_configuration(folder: NnUNetFolder, name: str) -> dict[str, Any]:
    """The named configuration of plans.json, checked to exist and to inherit without a cycle.

    nnU-Net resolves ``inherits_from`` recursively and reports a cycle without naming the
    file; here the chain is followed first, so a cycle or a missing parent is one line
    naming plans.json and the chain.
    """
    configurations = folder.plans["configurations"]
    plans_file = folder.path / "plans.json"
    if name not in configurations:
        raise ModelCardError(f"{plans_file} has no configuration {name!r} (it has "
                             f"{', '.join(configurations)}), but the checkpoints were trained with it; the plans "
                             "file does not belong to these checkpoints")
    chain, current = [name], name
    while True:
        entry = configurations[current]
        if not isinstance(entry, dict):
            raise ModelCardError(f"{plans_file}: configuration {current!r} must be a JSON object, got "
                                 f"{type(entry).__name__}")
        parent = entry.get("inherits_from")
        if parent is None:
            return configurations[name]
        if not isinstance(parent, str) or parent not in configurations:
            raise ModelCardError(f"{plans_file}: configuration {current!r} inherits_from {parent!r}, which the "
                                 f"plans do not have (they have {', '.join(configurations)}); restore the "
                                 "plans.json nnU-Net wrote")
        if parent in chain:
            cycle = " -> ".join(chain[chain.index(parent):] + [parent])
            raise ModelCardError(f"{plans_file}: 'inherits_from' forms a cycle ({cycle}), so configuration "
                                 f"{name!r} has no base; remove the inherits_from that closes the cycle")
        chain.append(parent)
        current = parent
