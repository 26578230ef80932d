"""Turn the INPUT arguments of the command line into a list of volumes to explain.

An argument is an image file (NRRD, NIfTI, MHA/MHD, a single DICOM file...), a
folder holding DICOM series (one input per series) or else image files, or a
text file listing such inputs one per line.  Discovery never opens image data:
it only decides what each input is and gives it a unique output stem, so a
cohort of hundreds of files is planned in a moment and every problem (a
missing file, an empty folder) is attached to the input it concerns instead of
aborting the whole run.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import SimpleITK as sitk

from ..imaging.reading import quiet_itk
from .errors import UserError
from .small_files import LIST_LIMIT, NotAFileError, read_small_text

#: File name endings read as images, longest first so ``.nii.gz`` wins over ``.gz``.
IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".hdr", ".dcm", ".dicom",
                  ".ima", ".tif", ".tiff", ".png", ".vtk", ".gipl", ".mnc")
#: File name endings read as lists of inputs.
LIST_SUFFIXES = (".txt", ".lst", ".list")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class InputItem:
    """One volume to explain, or the reason it cannot be.

    ``files`` holds the slice files of a DICOM series (empty for a plain file).
    ``error`` is set when discovery already knows the input is unusable; the
    run reports it and goes on with the others.
    """

    source: str
    path: Path
    stem: str
    files: tuple[str, ...] = field(default=(), repr=False)
    error: UserError | None = None

    @property
    def is_series(self) -> bool:
        return bool(self.files)

    @property
    def ok(self) -> bool:
        return self.error is None


def image_stem(path: Path) -> str:
    """File name without its image ending (``ct.nii.gz`` -> ``ct``), safe for output names."""
    name = path.name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return safe_name(name)


def safe_name(text: str) -> str:
    """Characters outside ``[A-Za-z0-9._-]`` become ``_`` (portable, shell-friendly names)."""
    cleaned = _UNSAFE.sub("_", text).strip("._")
    return cleaned or "input"


def real_path(path: Path) -> Path:
    """``path`` with symbolic links resolved; a link loop or an unreadable folder keeps it absolute.

    ``Path.resolve`` raises on a loop of links; one bad input must not stop
    the planning of the others.
    """
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def is_image_name(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def is_list_name(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES


def discover(arguments: Sequence[str]) -> list[InputItem]:
    """Expand INPUT arguments into input items with unique stems, in the order given."""
    items: list[InputItem] = []
    seen: set[tuple] = set()
    for argument in arguments:
        for item in _expand(str(argument), Path(argument), from_list=None):
            # The same volume named twice (in a list and on the command line) is explained once.
            key = (real_path(item.path), item.files, item.error is None)
            if item.error is None and key in seen:
                continue
            seen.add(key)
            items.append(item)
    return unique_stems(items)


def _expand(source: str, path: Path, from_list: Path | None) -> list[InputItem]:
    where = f" (listed in {from_list})" if from_list is not None else ""
    if not path.exists():
        if path.is_symlink():
            return [_failed(source, path, f"is a symbolic link that leads nowhere (a loop of "
                                          f"links or a missing target){where}")]
        return [_failed(source, path, f"no such file or folder{where}")]
    if path.is_dir():
        return _expand_folder(source, path, where)
    if is_list_name(path):
        if from_list is not None:
            return [_failed(source, path, f"a list file cannot name another list file{where}")]
        return list(_expand_list(path))
    return [InputItem(source, path, image_stem(path))]


def _expand_list(list_path: Path) -> Iterable[InputItem]:
    """Inputs named in a text file: one per line, ``#`` comments, paths relative to the file."""
    try:
        # a BOM (Windows editors) is not a path
        text = read_small_text(list_path, LIST_LIMIT, encoding="utf-8-sig")
    except UnicodeDecodeError:
        yield _failed(str(list_path), list_path, "is not a UTF-8 text file; a list file names "
                                                 "one input path per line")
        return
    except NotAFileError as exc:
        yield _failed(str(list_path), list_path, f"{exc.problem}; a list file is a text file "
                                                 "naming one input path per line")
        return
    found = False
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        found = True
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = list_path.parent / path
        yield from _expand(f"{list_path}:{number}: {entry}", path, from_list=list_path)
    if not found:
        yield _failed(str(list_path), list_path, "lists no inputs (one path per line, # starts "
                                                 "a comment)")


def _expand_folder(source: str, folder: Path, where: str) -> list[InputItem]:
    series = dicom_series(folder)
    if series:
        base = safe_name(real_path(folder).name)
        if len(series) == 1:
            return [InputItem(source, folder, base, series[0][1])]
        return [InputItem(f"{source} (series {uid})", folder, f"{base}_{number}", files)
                for number, (uid, files) in enumerate(series, start=1)]
    images = sorted(p for p in folder.iterdir() if is_image_name(p) and (p.is_file() or
                                                                          p.is_symlink()))
    if images:
        # A link among them that leads nowhere is an input that fails, not one left out.
        return [InputItem(str(p), p, image_stem(p)) if p.exists() else _expand(str(p), p, None)[0]
                for p in images]
    return [_failed(source, folder, f"folder holds no DICOM series and no image files{where}")]


def dicom_series(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(series UID, slice files)`` for each DICOM series directly in ``folder``."""
    with quiet_itk():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        return [(uid, tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)))
                for uid in uids]


def _failed(source: str, path: Path, problem: str) -> InputItem:
    return InputItem(source, path, image_stem(path), error=UserError(source, problem))


def unique_stems(items: list[InputItem]) -> list[InputItem]:
    """Make output stems unique across a run.

    Cohorts often hold ``patient01/ct.nrrd``, ``patient02/ct.nrrd``: colliding
    stems get their parent folder's name in front, and a number after if that
    is still not enough, so no input's outputs overwrite another's.
    """
    counts: dict[str, int] = {}
    for item in items:
        counts[item.stem] = counts.get(item.stem, 0) + 1
    renamed = []
    for item in items:
        stem = item.stem
        if counts[stem] > 1:
            # A series is named after its folder, so its distinguishing name is one level up.
            parent = real_path(item.path).parent
            stem = safe_name(f"{parent.name}_{stem}")
        renamed.append(replace(item, stem=stem))
    used: set[str] = set()
    result = []
    for item in renamed:
        stem, number = item.stem, 1
        while stem in used:
            number += 1
            stem = f"{item.stem}_{number}"
        used.add(stem)
        result.append(replace(item, stem=stem))
    return result
