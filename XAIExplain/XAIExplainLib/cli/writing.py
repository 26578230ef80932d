"""Write outputs so that an interrupted run never leaves a truncated file.

Every file is written under a hidden temporary name in the output folder and
renamed into place (``os.replace`` is atomic within one file system), so a
reader sees either the complete file or none.  An existing output is only
replaced with ``overwrite=True``, and an input is never a destination, even
with ``overwrite``.
"""
from __future__ import annotations

import os
import re
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import SimpleITK as sitk

from .discovery import quiet_itk, real_path
from .errors import UserError, one_line

#: Temporary files are ``<TEMP_PREFIX><8 hex digits>-<final name>`` (the final ending kept for
#: SimpleITK and matplotlib): a name the clean-up of a crashed run recognises as ours.
TEMP_PREFIX = ".xaiexplain-partial-"
TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{8}-[^/\\]+\Z")
#: The probe file :meth:`OutputFolder.prepare` writes (tempfile adds 8 characters).
PROBE_PREFIX = ".xaiexplain-probe-"
PROBE_NAME = re.compile(re.escape(PROBE_PREFIX) + r"[a-z0-9_]{8}\Z")

#: ``--format`` values and the file ending each writes.
FORMATS = {"nrrd": ".nrrd", "nii.gz": ".nii.gz"}


class OutputFolder:
    """A folder the run writes into; refuses to clobber existing files or inputs."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False,
                 protected: Iterable[Path] = ()):
        self.path = Path(path)
        self.overwrite = overwrite
        self._protected = {real_path(p) for p in protected}
        self._created = False

    def prepare(self) -> None:
        """Create the folder and prove it is writable before any computation starts."""
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise UserError(self.path, "exists and is not a folder; choose another "
                                       "--output-dir") from exc
        except OSError as exc:
            raise UserError(self.path, f"cannot create the output folder "
                                       f"({exc.strerror or one_line(exc)})") from exc
        try:
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=PROBE_PREFIX):
                pass
        except OSError as exc:
            raise UserError(self.path, f"output folder is not writable "
                                       f"({exc.strerror or one_line(exc)})") from exc

    def discard_if_unused(self) -> None:
        """Remove the folder again if this run created it and wrote nothing into it."""
        if self._created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def destination(self, name: str) -> Path:
        return self.path / name

    def check_free(self, names: Iterable[str]) -> None:
        """Raise before computing when an output would replace a file it must not."""
        for name in names:
            target = self.destination(name)
            if real_path(target) in self._protected:
                raise UserError(target, "is one of the inputs; inputs are never overwritten "
                                        "(choose another --output-dir)")
            if target.exists() and not self.overwrite:
                raise UserError(target, "already exists; pass --overwrite to replace it or "
                                        "choose another --output-dir")

    @contextmanager
    def staged(self, name: str) -> Iterator[Path]:
        """A temporary path ending like ``name``; renamed to ``name`` when the block succeeds.

        The temporary keeps the final ending because SimpleITK and matplotlib
        pick the file format from it.
        """
        self.check_free([name])
        final = self.destination(name)
        temp = self.path / temp_name(name)
        try:
            yield temp
            os.replace(temp, final)
        except OSError as exc:
            raise UserError(final, f"cannot be written ({exc.strerror or one_line(exc)})") from exc
        finally:
            if temp.exists():
                temp.unlink()

    def write_image(self, image: sitk.Image, name: str, compress: bool = True) -> Path:
        with self.staged(name) as temp:
            try:
                with quiet_itk():
                    sitk.WriteImage(image, str(temp), useCompression=compress)
            except RuntimeError as exc:
                raise UserError(self.destination(name),
                                f"cannot be written ({one_line(exc)})") from exc
        return self.destination(name)

    def write_text(self, text: str, name: str) -> Path:
        with self.staged(name) as temp:
            temp.write_text(text, encoding="utf-8", newline="")
        return self.destination(name)

    def write_with(self, writer: Callable[[Path], None], name: str) -> Path:
        """Let ``writer(path)`` produce the file (a PNG from matplotlib, ...), then rename it."""
        with self.staged(name) as temp:
            writer(temp)
        return self.destination(name)


def temp_name(name: str) -> str:
    """A fresh temporary name for writing ``name`` (see :data:`TEMP_PREFIX`)."""
    return f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
