"""Images uploaded from the browser: one NRRD / NIfTI / MHA file, or a zip of one DICOM series.

The bytes are written to a private temporary folder and read with the same integrity checks
as a file named on the command line (:func:`XAIExplainLib.cli.reading.read_image`); a zip is
unpacked member by member, refusing absolute paths, ``..`` and more unpacked bytes than the
upload limit (a zip bomb), and must hold exactly one DICOM series.
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .security import UPLOAD_LIMIT_BYTES, AccessError

IMAGE_ENDINGS = (".nrrd", ".nii", ".nii.gz", ".mha")


def _ending(name: str) -> str:
    lower = name.lower()
    return next((e for e in sorted(IMAGE_ENDINGS + (".zip",), key=len, reverse=True) if lower.endswith(e)), "")


def read_upload(name: str, content: bytes, limit: int = UPLOAD_LIMIT_BYTES):
    """``(SimpleITK image, node name)`` of an upload; ValueError / AccessError say what was wrong."""
    from ..cli.discovery import dicom_series
    from ..cli.reading import check_image, read_image

    ending = _ending(name)
    if not ending:
        raise ValueError(f"'{name}': upload an NRRD, NIfTI (.nii, .nii.gz) or MHA file, or a .zip of one "
                         "DICOM series")
    stem = PurePosixPath(name.replace("\\", "/")).name[: -len(ending)] or "upload"
    with tempfile.TemporaryDirectory(prefix="xaiexplain-upload-") as folder:
        if ending != ".zip":
            path = Path(folder) / f"upload{ending}"
            path.write_bytes(content)
            image = read_image(path, name)
        else:
            series_folder = Path(folder) / "series"
            _unzip(content, series_folder, limit)
            found = dicom_series(series_folder)
            if len(found) != 1:
                raise ValueError(f"'{name}': the zip holds {len(found)} DICOM series; upload a zip of exactly one")
            image = read_image(series_folder, name, found[0][1])
        check_image(image, name)
    return image, stem


def _unzip(content: bytes, folder: Path, limit: int) -> None:
    import io

    folder.mkdir()
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as error:
        raise ValueError(f"not a readable zip file ({error})") from error
    total = 0
    with archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            parts = PurePosixPath(member.filename).parts
            if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
                raise AccessError(f"the zip member '{member.filename}' points outside the archive")
            total += member.file_size
            if total > limit:
                raise AccessError(f"the zip unpacks to more than {limit / 2 ** 20:.0f} MB")
            if not parts:
                continue
            target = folder / parts[-1]  # one series: its slices side by side, whatever the zip's folders
            if target.exists():
                raise ValueError(f"the zip holds two files named '{parts[-1]}'; zip one DICOM series")
            with archive.open(member) as source:
                data = source.read(limit + 1)
            if len(data) != member.file_size:
                raise AccessError(f"the zip member '{member.filename}' is not the size its header declares")
            target.write_bytes(data)
