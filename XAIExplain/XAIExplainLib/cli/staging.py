"""An input's outputs appear together or not at all.

Files of one input are first written into a hidden staging folder inside the
output folder (same file system, so moving them is a rename).  Only when
every method, label map and overlay of the input succeeded are they moved
into place, followed by the input's manifest, which is what marks the input
complete.  The moves are preceded by a small journal listing them: a run
killed in the middle of the moves (SIGKILL, power loss) leaves the journal,
and the next run into the folder, or the retry of that input on another
worker, takes those files back out before computing the input again.  A
failure before the moves (an incompatible method, a full disk, Ctrl-C)
removes the staging folder and leaves the output folder as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from .errors import UserError, one_line
from .manifest import manifest_name, manifest_text, recorded_files
from .summary import InputRecord
from .writing import OutputFolder

STAGE_PREFIX = ".xaiexplain-stage-"
JOURNAL_ENDING = ".xaiexplain-commit.json"


def journal_name(stem: str) -> str:
    return f".{stem}{JOURNAL_ENDING}"


class InputStage(OutputFolder):
    """Where one input's files are written before they are moved into ``final`` together.

    It is an :class:`OutputFolder` (the same atomic writers), whose
    existence checks are made against the final folder: a file the input
    may not replace is refused before anything is computed.
    """

    def __init__(self, final: OutputFolder, stem: str, replaceable: Iterable[str] = ()):
        token = uuid.uuid4().hex[:8]
        super().__init__(final.path / f"{STAGE_PREFIX}{stem}-{token}", overwrite=True)
        self.final = final
        self.stem = stem
        self._replaceable = set(replaceable)
        self._names: list[str] = []

    def prepare(self) -> None:
        try:
            self.path.mkdir()
        except OSError as exc:
            raise UserError(self.final.path, f"cannot write into the output folder "
                                             f"({exc.strerror or one_line(exc)})") from exc

    def check_free(self, names: Iterable[str]) -> None:
        # Files the input's own earlier manifest lists are its own, and may be replaced.
        self.final.check_free([n for n in names if n not in self._replaceable])

    def destination(self, name: str) -> Path:
        if name not in self._names:
            self._names.append(name)
        return self.path / name

    def commit(self, record: InputRecord, fingerprint: dict) -> None:
        """Move every staged file into place, then write the manifest that marks them complete."""
        final = self.final.path
        sizes = {name: (self.path / name).stat().st_size for name in record.outputs}
        stale = [n for n in recorded_files(final, self.stem) if n not in sizes]
        journal = final / journal_name(self.stem)
        _atomic_text(journal, json.dumps({"stage": self.path.name, "files": record.outputs}))
        try:
            for name in record.outputs:
                os.replace(self.path / name, final / name)
            _atomic_text(final / manifest_name(self.stem),
                         manifest_text(record, fingerprint, sizes))
        except OSError as exc:
            rollback(final, self.stem)
            raise UserError(final / record.outputs[0] if record.outputs else final,
                            f"cannot be written ({exc.strerror or one_line(exc)})") from exc
        for name in stale:  # files of an earlier run with other settings (--overwrite)
            _remove(final / name)
        _remove(journal)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def rollback(folder: Path, stem: str) -> None:
    """Undo an interrupted commit of ``stem``: remove the files its journal lists."""
    journal = folder / journal_name(stem)
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        for name in data.get("files", []):
            _remove(folder / Path(str(name)).name)
        _remove(folder / manifest_name(stem))
        stage = Path(str(data.get("stage", ""))).name
        if stage.startswith(STAGE_PREFIX):
            shutil.rmtree(folder / stage, ignore_errors=True)
    _remove(journal)


def clean_folder(folder: Path) -> None:
    """Remove what killed runs left: staging folders, temporary files, half-done commits.

    Only called while the folder's lock is held, so none of it belongs to a
    live run.
    """
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") and name.endswith(JOURNAL_ENDING):
            rollback(folder, name[1:-len(JOURNAL_ENDING)])
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(STAGE_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif name.startswith(".") and ".partial" in name and entry.is_file():
            _remove(entry)


def _atomic_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        _remove(temp)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
