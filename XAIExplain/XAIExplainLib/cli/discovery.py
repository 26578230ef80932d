"""Turn the INPUT arguments of the command line into a list of volumes to explain.

An argument is an image file (NRRD, NIfTI, MHA/MHD, a single DICOM file...), a
folder holding DICOM series (one input per series) or else image files, or a
text file listing such inputs one per line.  For a model with several input
channels (multi-sequence MRI, CT + PET) one input is several files: comma-joined
(``t1.nii.gz,t1ce.nii.gz,t2.nii.gz,flair.nii.gz``, on the command line or as one
line of a list file), or a folder's files in nnU-Net's naming (``CASE_0000.nii.gz``,
``CASE_0001.nii.gz``, ...) grouped by case.  Discovery never opens image data:
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
from .manifest import listed_outputs
from .small_files import LIST_LIMIT, NotAFileError, read_small_text

#: File name endings read as images, longest first so ``.nii.gz`` wins over ``.gz``.
IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".hdr", ".dcm", ".dicom",
                  ".ima", ".tif", ".tiff", ".png", ".vtk", ".gipl", ".mnc")
#: File name endings read as lists of inputs.
LIST_SUFFIXES = (".txt", ".lst", ".list")

#: Hidden names this tool writes into an output folder (temporary files, staging folders).
TOOL_HIDDEN_PREFIX = ".xaiexplain-"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: nnU-Net's file naming of a case's channels: ``CASE_XXXX`` + the image ending, XXXX the channel index.
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


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
    #: ``list.txt:N`` for an input named on line N of a list file (``source`` then starts with it).
    listed_in: str = ""
    #: One file per input channel, in the model's channel order (``path`` is the first), for a model
    #: with several input channels; empty for a single file or series.
    channel_paths: tuple[Path, ...] = ()

    @property
    def plain(self) -> str:
        """The input itself, without the list file it came from: a path that opens from the working
        folder (a list's relative path joined to the list's folder), and the series of a DICOM folder."""
        prefix = f"{self.listed_in}: "
        return self.source[len(prefix):] if self.listed_in and self.source.startswith(prefix) else self.source

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file the input reads: its channel files, its DICOM slices, or its one file."""
        return self.channel_paths or tuple(Path(f) for f in self.files) or (Path(self.path),)

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


def discover(arguments: Sequence[str], output_dir: str | os.PathLike | None = None,
             notes: list[str] | None = None, channels: Sequence[str] = ()) -> list[InputItem]:
    """Expand INPUT arguments into input items with unique stems, in the order given.

    ``channels`` names the model's input channels; with more than one, an input may be
    one file per channel (see the module docstring).

    Outputs of this tool (files an ``*.xaiexplain.json`` manifest lists) are
    never inputs: in a folder they are skipped with a line in ``notes``, named
    on their own they are inputs that fail with the reason.  ``output_dir``
    is the run's output folder, noted when it lies inside an input folder.
    """
    notes = [] if notes is None else notes
    context = _Context(real_path(Path(output_dir)) if output_dir is not None else None, notes,
                       tuple(channels))
    items: list[InputItem] = []
    seen: set[tuple] = set()
    for argument in arguments:
        for item in _expand(str(argument), Path(argument), from_list=None, context=context):
            # The same volume named twice (in a list and on the command line) is explained once.
            key = (real_path(item.path), item.files, item.channel_paths, item.error is None)
            if item.error is None and key in seen:
                continue
            seen.add(key)
            items.append(item)
    return unique_stems(items)


@dataclass
class _Context:
    """What discovery carries along: the output folder and the notes for the user."""

    output_dir: Path | None
    notes: list[str]
    #: The model's input channel names (several: inputs may be one file per channel).
    channels: tuple[str, ...] = ()
    outputs: dict[Path, set[str]] = field(default_factory=dict)

    @property
    def multichannel(self) -> bool:
        return len(self.channels) > 1

    def outputs_in(self, folder: Path) -> set[str]:
        """Names the manifests in ``folder`` list as outputs of this tool (read once per folder)."""
        key = real_path(folder)
        if key not in self.outputs:
            names, problems = listed_outputs(folder)
            self.notes.extend(f"{p} (its files are not recognised as outputs)" for p in problems)
            self.outputs[key] = names
        return self.outputs[key]


def _expand(source: str, path: Path, from_list: Path | None,
            context: _Context, relative: bool = False) -> list[InputItem]:
    where = ""
    if from_list is not None:
        where = f" (listed in {from_list}" + ("; a relative path is read from the list's folder)" if relative else ")")
    if not path.exists() and "," in str(path):
        return [_channel_group(source, [Path(part.strip()) for part in str(path).split(",")], where, context)]
    if not path.exists():
        if path.is_symlink():
            return [_failed(source, path, f"is a symbolic link that leads nowhere (a loop of "
                                          f"links or a missing target){where}")]
        return [_failed(source, path, f"no such file or folder{where}")]
    if path.is_dir():
        return _expand_folder(source, path, where, context)
    if is_list_name(path):
        if from_list is not None:
            return [_failed(source, path, f"a list file cannot name another list file{where}")]
        return list(_expand_list(path, context))
    if path.name in context.outputs_in(path.parent):
        return [_failed(source, path, f"is an output of an earlier xaiexplain run (its manifest in "
                                      f"{path.parent} lists it){where}; give the scan it was "
                                      "made from")]
    return [InputItem(source, path, image_stem(path))]


def _expand_list(list_path: Path, context: _Context) -> Iterable[InputItem]:
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
        path = _from_list(Path(entry).expanduser(), list_path)
        relative = not Path(entry).expanduser().is_absolute()
        if not path.exists() and "," in entry:  # one file per channel, each relative to the list's folder
            parts = [Path(part.strip()).expanduser() for part in entry.split(",")]
            relative = not all(part.is_absolute() for part in parts)
            path = Path(",".join(str(_from_list(part, list_path)) for part in parts))
        # messages name the line and the path as resolved (what was looked for), the summary the path alone
        line = f"{list_path}:{number}"
        for item in _expand(f"{line}: {path}", path, from_list=list_path, context=context,
                            relative=relative):
            yield replace(item, listed_in=line)
    if not found:
        yield _failed(str(list_path), list_path, "lists no inputs (one path per line, # starts "
                                                 "a comment)")


def _from_list(path: Path, list_path: Path) -> Path:
    """A path named in a list file: a relative one is read from the list's folder."""
    return path if path.is_absolute() else list_path.parent / path


def _channel_group(source: str, paths: list[Path], where: str, context: _Context) -> InputItem:
    """One input of several files, one per input channel in the model's channel order."""
    first = paths[0]
    if not context.multichannel:
        return _failed(source, first, f"no such file{where}; several comma-joined files are one input of a model "
                                      "with several input channels, and this model takes one image")
    if len(paths) != len(context.channels):
        return _failed(source, first, f"names {len(paths)} file(s){where}, but the model takes "
                                      f"{len(context.channels)}, one per input channel in the order "
                                      f"{', '.join(context.channels)}")
    for path, name in zip(paths, context.channels):
        if not path.exists():
            return _failed(source, path, f"the {name} file {path} does not exist{where}")
        if not path.is_file() or is_list_name(path):
            return _failed(source, path, f"the {name} file {path} is not an image file{where}; each "
                                         "comma-joined part names one image file")
    return InputItem(source, first, _case_stem(first), channel_paths=tuple(paths))


def _case_stem(path: Path) -> str:
    """The stem of a case's outputs: ``CASE`` for nnU-Net's ``CASE_0000.nii.gz``, else the first file's stem."""
    stem = image_stem(path)
    match = _NNUNET_CHANNEL.match(stem)
    return match.group("case") if match else stem


def _channel_cases(source: str, images: list[Path], context: _Context) -> tuple[list[InputItem], list[Path]]:
    """A folder's files in nnU-Net's naming grouped by case (one input per case, channels in index order),
    and the files that are not so named (each an input of its own: a vector image, say)."""
    cases: dict[str, dict[int, Path]] = {}
    loose = []
    for path in images:
        match = _NNUNET_CHANNEL.match(image_stem(path))
        if match is None:
            loose.append(path)
        else:
            cases.setdefault(match.group("case"), {})[int(match.group("channel"))] = path
    items = []
    wanted = range(len(context.channels))
    for case, files in sorted(cases.items()):
        if sorted(files) != list(wanted):
            missing = [f"{case}_{i:04d} ({context.channels[i]})" for i in wanted if i not in files]
            extra = [files[i].name for i in sorted(files) if i not in wanted]
            said = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                               f"more channels than the model takes: {', '.join(extra)}"
                                               if extra else "") if part)
            first = files[min(files)]
            failed = _failed(f"{source} (case {case})", first,
                             f"case {case} does not hold one file per input channel ({said}); the model takes "
                             f"{', '.join(context.channels)} as {case}_0000 ... {case}_{len(wanted) - 1:04d}")
            items.append(replace(failed, stem=safe_name(case)))
            continue
        paths = [files[i] for i in wanted]
        items.append(InputItem(",".join(map(str, paths)), paths[0], safe_name(case), channel_paths=tuple(paths)))
    return items, loose


def _expand_folder(source: str, folder: Path, where: str, context: _Context) -> list[InputItem]:
    """One input per DICOM series in ``folder`` and one per image file outside those series.

    Outputs of this tool and its temporary files are skipped with a note;
    subfolders are not searched (the output folder among them is named in a note).
    """
    items: list[InputItem] = []
    series = dicom_series(folder)
    in_series = {real_path(Path(f)) for _, files in series for f in files}
    if series:
        base = safe_name(real_path(folder).name)
        if len(series) == 1:
            items.append(InputItem(source, folder, base, series[0][1]))
        else:
            items.extend(InputItem(f"{source} (series {uid})", folder, f"{base}_{number}", files)
                         for number, (uid, files) in enumerate(series, start=1))
    ours = context.outputs_in(folder)
    skipped = []
    images = []
    for path in sorted(folder.iterdir()):
        if not is_image_name(path) or not (path.is_file() or path.is_symlink()):
            continue
        if path.name in ours or path.name.startswith(TOOL_HIDDEN_PREFIX):
            skipped.append(path.name)
        elif real_path(path) not in in_series:
            images.append(path)
    if skipped:
        context.notes.append(f"{source}: skipped {len(skipped)} file(s) written by xaiexplain "
                             "(outputs its manifests list, or temporary files), which are never "
                             "inputs")
    out = context.output_dir
    if out is not None and out != real_path(folder) and real_path(folder) in out.parents:
        context.notes.append(f"{source}: the output folder {out} inside it is not searched for "
                             "inputs (subfolders never are)")
    if context.multichannel:
        cases, images = _channel_cases(source, images, context)
        items.extend(cases)
    # A link among them that leads nowhere is an input that fails, not one left out.
    items.extend(InputItem(str(p), p, image_stem(p)) if p.exists()
                 else _expand(str(p), p, None, context)[0] for p in images)
    if items:
        return items
    if skipped:
        return [_failed(source, folder, f"folder holds only files written by xaiexplain{where}; "
                                        "give the folder of the scans")]
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
    """Make output stems unique across a run, whatever the order of the inputs.

    Cohorts often hold ``patient01/ct.nrrd``, ``patient02/ct.nrrd``: colliding
    stems get their parent folders' names in front, one more level each round
    until they differ (``x/scan/ct.nrrd`` and ``y/scan/ct.nrrd`` become
    ``x_scan_ct`` and ``y_scan_ct``).  What still collides (names that differ
    only in characters unsafe in file names) is numbered in the order of the
    resolved paths.  A stem so depends on the set of inputs, never on the
    order of the arguments, so a re-run in another order finds each input's
    own outputs.
    """
    depth = [0] * len(items)
    stems = [item.stem for item in items]
    for _ in range(_MAX_PARENTS):
        groups = _collisions(stems)
        if not groups:
            break
        for group in groups:
            for index in group:
                depth[index] += 1
                stems[index] = _with_parents(items[index], depth[index])
    for group in _collisions(stems):
        group.sort(key=lambda i: _order_key(items[i]))
        used = set(stems)
        for number, index in enumerate(group[1:], start=2):
            stem = f"{stems[index]}_{number}"
            while stem in used:
                number += 1
                stem = f"{stems[index]}_{number}"
            used.add(stem)
            stems[index] = stem
    return [replace(item, stem=stem) for item, stem in zip(items, stems)]


#: How many parent folders a stem may take in front before colliding ones are numbered.
_MAX_PARENTS = 4


def _collisions(stems: list[str]) -> list[list[int]]:
    where: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        where.setdefault(stem, []).append(index)
    return [group for group in where.values() if len(group) > 1]


def _with_parents(item: InputItem, depth: int) -> str:
    """``item``'s stem after the names of its ``depth`` nearest parent folders.

    A series is named after its folder, so its distinguishing names are one level up too.
    """
    parents = [p.name for p in list(real_path(item.path).parents)[:depth] if p.name]
    return safe_name("_".join(reversed(parents)) + "_" + item.stem) if parents else item.stem


def _order_key(item: InputItem) -> tuple:
    return (str(real_path(item.path)), item.files, item.source)
