"""One image reader for every caller, which refuses data that is not all there.

ITK reads a truncated NIfTI file with the missing voxels as zeros, and a
header may claim a volume thousands of times larger than its file, which ITK
then allocates before it fails. So before any voxel is read the header is
parsed here and the declared data length is checked against the file (the
decompressed stream for gzip data) and against the memory this machine has.
A DICOM series must be complete: every file readable, slice positions along
the slice normal unique and evenly spaced (ITK would otherwise place the
slices on a wrong grid and only print a warning).

Every refusal is an :class:`ImageReadError` whose ``problem`` says what is
wrong with the file and what to do; ``str(error)`` is ``"<file>: <problem>"``.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import re
import stat
import struct
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

#: ITK prefixes messages with the object's class and address: ``NrrdImageIO(0x55d0...): ``.
_ITK_OBJECT = re.compile(r"\b\w+\(0x[0-9a-fA-F]+\):\s*")

#: Relative tolerance on the spacing between DICOM slice positions.
SLICE_SPACING_TOLERANCE = 0.01


class ImageReadError(ValueError):
    """An image file that cannot be used; ``subject`` is the file, ``problem`` the reason."""

    def __init__(self, subject: object, problem: str):
        super().__init__(f"{subject}: {problem}")
        self.subject = str(subject)
        self.problem = problem


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's warnings (printed straight to stderr): the checks here report instead."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def available_memory_bytes() -> int | None:
    """Memory the system can still give this process (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """``1536 -> '1.5 KB'``: sizes in messages."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def read_image(path: str | os.PathLike, files: Sequence[str] = ()) -> sitk.Image:
    """Read an image file (or the slice files of one DICOM series) after checking its integrity."""
    path = Path(path)
    if files:
        return read_dicom_series(files)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a folder; give an image file")
    if not path.is_file():
        raise ImageReadError(path, f"is {file_kind(path)}, not a regular file; give an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "is an empty file (0 bytes)")
    check_declared_size(path)
    return _execute(path, lambda: sitk.ReadImage(str(path)))


def file_kind(path: str | os.PathLike) -> str:
    """What ``path`` is when it is not a regular file, in words (``a FIFO (named pipe)``...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing or unreadable"
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def _execute(subject, read):
    try:
        with quiet_itk():
            return read()
    except MemoryError as exc:
        raise ImageReadError(subject, "does not fit in memory; crop or downsample it first") from exc
    except RuntimeError as exc:
        message = itk_reason(exc)
        if "Unable to determine ImageIO reader" in message:
            raise ImageReadError(subject, "is not an image SimpleITK can read (NRRD, NIfTI, MHA, "
                                          "DICOM...)") from exc
        if "bad_alloc" in message or "allocat" in message.lower():
            raise ImageReadError(subject, "does not fit in memory; crop or downsample it first") from exc
        raise ImageReadError(subject, f"cannot be read as an image ({message})") from exc


def itk_reason(error: BaseException) -> str:
    """The ``ERROR:`` part of a SimpleITK exception, one line, without C++ source locations."""
    text = str(error)
    if "ERROR:" in text:
        text = text.split("ERROR:", 1)[1]
    text = _ITK_OBJECT.sub("", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__).rstrip(":")


# ---- declared size against the file and the memory --------------------------------------------

def check_declared_size(path: Path) -> None:
    """Refuse a file whose header declares more data than the file holds or memory allows."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        declared, payload = _nifti_payload(path)
    elif name.endswith((".nrrd", ".nhdr")):
        declared, payload = _nrrd_payload(path)
    elif name.endswith((".mha", ".mhd")):
        declared, payload = _meta_payload(path)
    else:
        return
    _check_memory(path, declared)
    if payload is not None:
        _check_length(path, declared, *payload)


def _check_memory(path: Path, declared: int) -> None:
    available = available_memory_bytes()
    if available is not None and declared > available:
        raise ImageReadError(path, f"its header declares {format_bytes(declared)} of voxel data, more "
                                   f"than the {format_bytes(available)} of memory available; crop or "
                                   "downsample it first, or check that the header is not corrupt")


def _check_length(path: Path, declared: int, data_file: Path, offset: int, compression: str | None,
                  stream_offset: int = 0) -> None:
    """The voxel data of ``path`` is ``declared`` bytes from ``offset`` of ``data_file`` (after
    ``stream_offset`` bytes of the decompressed stream, for a gzip file holding its header too)."""
    if data_file != path and not data_file.is_file():
        if os.path.exists(data_file):  # /dev/zero, a FIFO: never read (endless, or blocking)
            raise ImageReadError(path, f"its detached data file {data_file} is {file_kind(data_file)}, "
                                       "not a regular file; point the header at the file holding its voxels")
        raise ImageReadError(path, f"its detached data file {data_file.name} is missing (looked for "
                                   f"{data_file}); keep the header and its data file together")
    if compression == "present":
        return
    if compression is None:
        have = data_file.stat().st_size - offset
    else:
        have = _decompressed_length(data_file, offset, compression, stream_offset + declared) - stream_offset
    if have < declared:
        what = "decompressed data" if compression else "file"
        raise ImageReadError(path, f"is truncated: the header declares {declared} bytes of voxel data but "
                                   f"the {what} holds {max(have, 0)} bytes; the file was cut short (an "
                                   "interrupted copy or download?), get a complete copy")


def _decompressed_length(path: Path, offset: int, compression: str, limit: int) -> int:
    """Bytes a compressed stream expands to, counted in chunks and stopping once ``limit`` is reached.

    The raw stream is fed to the inflater piece by piece, so a stream cut short still counts every
    byte that decompresses before the cut (``GzipFile.read`` raised at the cut and counted nothing of
    its last megabyte: a truncated file was reported as holding 0 bytes). A gzip file may hold several
    members one after the other."""
    wbits = 16 + zlib.MAX_WBITS if compression == "gzip" else zlib.MAX_WBITS  # gzip | zlib (MetaImage)
    total = 0
    try:
        with open(path, "rb") as raw:
            raw.seek(offset)
            inflater = zlib.decompressobj(wbits)
            while total < limit:
                chunk = raw.read(1 << 16)
                if not chunk:
                    break
                total += len(inflater.decompress(chunk))
                while compression == "gzip" and inflater.eof and inflater.unused_data and total < limit:
                    rest, inflater = inflater.unused_data, zlib.decompressobj(wbits)  # the next member
                    total += len(inflater.decompress(rest))
    except (OSError, zlib.error):
        pass  # a corrupt stream: what was counted is what there is
    return total


def _nifti_payload(path: Path):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
    except (OSError, EOFError) as exc:
        raise ImageReadError(path, f"cannot be read as NIfTI ({exc})") from exc
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        raise ImageReadError(path, "is not a NIfTI file (its header size field is neither 348 nor 540)")
    rank = dims[0]
    if not 1 <= rank <= 7 or any(d < 1 for d in dims[1:rank + 1]) or bitpix < 1:
        raise ImageReadError(path, f"has a corrupt NIfTI header (dim {list(dims[:rank + 1])}, bitpix {bitpix})")
    declared = int(np.prod([int(d) for d in dims[1:rank + 1]], dtype=object)) * bitpix // 8
    if path.name.lower().endswith(".gz"):  # the voxels follow the header inside the gzip stream
        return declared, (path, 0, "gzip", offset)
    return declared, (path, offset, None)


#: Bytes per value of NRRD ``type`` names and MetaImage ``ElementType`` names.
_NRRD_TYPES = {1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
               2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                   "unsigned short", "unsigned short int", "uint16", "uint16_t"),
               4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                   "float"),
               8: ("longlong", "long long", "long long int", "signed long long", "signed long long int",
                   "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64",
                   "uint64_t", "double")}
_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}


def _text_header(path: Path, stop) -> tuple[list[str], int]:
    """The header lines of a text-header format and the byte offset where its data starts."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    lines, position = [], 0
    while position < len(head):
        end = head.find(b"\n", position)
        if end < 0:
            end = len(head)
        line = head[position:end].decode("latin-1").rstrip("\r")
        position = end + 1
        if stop(line):
            lines.append(line)
            return lines, position
        lines.append(line)
    return lines, position


def _nrrd_payload(path: Path):
    lines, offset = _text_header(path, lambda line: line == "")
    fields = {}
    for line in lines[1:]:
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.lstrip("=").strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        size = next(n for n, names in _NRRD_TYPES.items() if fields["type"].lower() in names)
    except (KeyError, ValueError, StopIteration):
        return 0, None  # a header ITK will judge itself
    declared = int(np.prod(sizes, dtype=object)) * size
    encoding = fields.get("encoding", "raw").lower()
    detached = fields.get("data file") or fields.get("datafile")
    if detached and (detached.startswith("LIST") or "%" in detached):
        return declared, None
    data_file = (path.parent / detached) if detached else path
    data_offset = 0 if detached else offset
    if fields.get("byte skip", "0").strip() not in ("0", ""):
        return declared, None
    if encoding == "raw":
        return declared, (data_file, data_offset, None)
    if encoding in ("gzip", "gz"):
        return declared, (data_file, data_offset, "gzip")
    if detached:
        return declared, (data_file, 0, "present")  # only its presence is checked
    return declared, None


def _meta_payload(path: Path):
    lines, offset = _text_header(path, lambda line: line.replace(" ", "").lower().startswith("elementdatafile="))
    fields = {}
    for line in lines:
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip().lower()] = value.strip()
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
        size = _META_TYPES[fields["elementtype"].upper()]
        channels = int(fields.get("elementnumberofchannels", "1"))
    except (KeyError, ValueError):
        return 0, None
    declared = int(np.prod(dims, dtype=object)) * size * channels
    data_name = fields.get("elementdatafile", "LOCAL")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if data_name.upper() == "LOCAL":
        data_file, data_offset = path, offset
    elif data_name.upper().startswith("LIST") or "%" in data_name or " " in data_name:
        return declared, None
    else:
        data_file, data_offset = path.parent / data_name, 0
    if int(fields.get("headersize", "0") or 0) != 0:
        return declared, None
    return declared, (data_file, data_offset, "zlib" if compressed else None)


# ---- DICOM series ------------------------------------------------------------------------------

def read_dicom_series(files: Sequence[str]) -> sitk.Image:
    """Read the slices of one series after checking that they form one uniform grid."""
    files = list(files)
    subject = Path(files[0]).parent if files else Path(".")
    check_dicom_series(files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = _execute(subject, reader.Execute)
    modality = _slice_modality(files[0])
    if modality:
        image.SetMetaData(DICOM_MODALITY_KEY, modality)
    return image


#: DICOM (0008,0060) Modality: kept on a series' image (a single file keeps its header anyway), so that a model
#: with a CT and an MR pipeline runs the one the scanner wrote (models.modality).
DICOM_MODALITY_KEY = "0008|0060"


def _slice_modality(name: str) -> str | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(name))
    with quiet_itk():
        reader.ReadImageInformation()
    if not reader.HasMetaDataKey(DICOM_MODALITY_KEY):
        return None
    return reader.GetMetaData(DICOM_MODALITY_KEY).strip() or None


def check_dicom_series(files: Sequence[str]) -> None:
    """Every slice readable, positions along the slice normal unique and evenly spaced."""
    files = list(files)
    if not files:
        raise ImageReadError("DICOM series", "has no slice files")
    subject = Path(files[0]).parent
    positions, normal, sizes = [], None, []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            with quiet_itk():
                reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ImageReadError(subject, f"slice file {Path(name).name} cannot be read ({itk_reason(exc)}); "
                                          "the series is incomplete: remove or replace that file") from exc
        sizes.append((tuple(reader.GetSize()[:2]), Path(name).name))
        if not reader.HasMetaDataKey("0020|0032") or not reader.HasMetaDataKey("0020|0037"):
            if len(files) > 1:
                raise ImageReadError(subject, f"slice file {Path(name).name} has no image position or "
                                              "orientation; the slices cannot be placed on a grid")
            return
        try:
            position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
            if normal is None:
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(cosines[:3], cosines[3:6])
        except (ValueError, IndexError) as exc:
            raise ImageReadError(subject, f"slice file {Path(name).name} has a malformed image position or "
                                          "orientation") from exc
        positions.append((float(position @ normal), Path(name).name))
    _check_slice_sizes(subject, sizes)
    if len(positions) < 2:
        return
    positions.sort()
    steps = np.diff([p for p, _ in positions])
    duplicate = next((i for i, step in enumerate(steps) if abs(step) < 1e-3), None)
    if duplicate is not None:
        raise ImageReadError(subject, f"slices {positions[duplicate][1]} and {positions[duplicate + 1][1]} "
                                      f"are at the same position ({positions[duplicate][0]:.6g} mm along the "
                                      "slice normal); the series holds duplicates: remove them")
    typical = float(np.median(steps))
    off = [i for i, step in enumerate(steps) if abs(step - typical) > SLICE_SPACING_TOLERANCE * typical]
    if off:
        i = off[0]
        raise ImageReadError(subject, f"slice positions are not evenly spaced: {positions[i][1]} to "
                                      f"{positions[i + 1][1]} is {steps[i]:.6g} mm where the other slices are "
                                      f"{typical:.6g} mm apart (a missing or extra slice?); the volume would "
                                      "be placed on a wrong grid. Complete the series")


def _check_slice_sizes(subject: Path, sizes: list[tuple[tuple[int, ...], str]]) -> None:
    """Every slice of a series has the rows and columns of the others (ITK would name only
    itself, with its source location)."""
    if len({size for size, _ in sizes}) < 2:
        return
    counts: dict[tuple[int, ...], int] = {}
    for size, _ in sizes:
        counts[size] = counts.get(size, 0) + 1
    typical = max(counts, key=lambda size: (counts[size], size == sizes[0][0]))
    size, name = next((size, name) for size, name in sizes if size != typical)
    raise ImageReadError(subject, f"slice file {name} is {size[0]} x {size[1]} pixels where the other slices are "
                                  f"{typical[0]} x {typical[1]}; it belongs to another image: remove it from "
                                  "the series' folder")
