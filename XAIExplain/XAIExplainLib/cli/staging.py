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
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from .errors import UserError, one_line
from .manifest import manifest_name, manifest_text, output_of, read_record_json, recorded_files
from .summary import InputRecord
from .writing import PROBE_NAME, TEMP_NAME, OutputFolder, temp_name

STAGE_PREFIX = ".xaiexplain-stage-"
#: ``<STAGE_PREFIX><stem>-<8 hex digits>``: the staging folders of :class:`InputStage`.
STAGE_NAME = re.compile(re.escape(STAGE_PREFIX) + r".+-[0-9a-f]{8}\Z")
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

    def commit(self, record: InputRecord, fingerprint: dict, identity: dict | None = None) -> None:
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
                         manifest_text(record, fingerprint, sizes, identity))
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
    """Undo an interrupted commit of ``stem``: remove the files its journal lists.

    The journal is read back like a manifest (untrusted, size-limited, from a
    regular file only): every name it lists must be one of ``stem``'s output
    names and its staging folder one of ``stem``'s, all checked before
    anything is removed; a journal that is not ours is an error naming it.
    """
    journal = folder / journal_name(stem)
    if not os.path.lexists(journal):
        return
    data = read_record_json(journal, not_a_file="it is not a commit journal of xaiexplain",
                            unreadable="is not a readable commit journal of xaiexplain")
    files = data.get("files") if isinstance(data, dict) else None
    stage = data.get("stage") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(output_of(stem, name) for name in files) \
            or not (stage == "" or isinstance(stage, str) and stage_of(stem, stage)):
        raise UserError(journal, f"is not a commit journal of xaiexplain for {stem} (it names "
                                 "files that are not its outputs); remove it or choose another "
                                 "--output-dir")
    for name in files:
        _remove(folder / name)
    _remove(folder / manifest_name(stem))
    if stage:
        _remove_stage(folder / stage)
    _remove(journal)


def stage_of(stem: str, name: str) -> bool:
    """``name`` is a staging folder name :class:`InputStage` makes for ``stem``."""
    return STAGE_NAME.match(name) is not None and name[len(STAGE_PREFIX):-9] == stem


def clean_folder(folder: Path) -> None:
    """Remove what killed runs of this tool left: staging folders, temporary files, half commits.

    Only names this tool makes are touched (:data:`STAGE_NAME`,
    :data:`.writing.TEMP_NAME`, :data:`.writing.PROBE_NAME`, commit
    journals): a user's own hidden file, ``.notes.partial.txt`` say, stays.
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
        if STAGE_NAME.match(name):
            _remove_stage(entry)
        elif (TEMP_NAME.match(name) or PROBE_NAME.match(name)) and not entry.is_dir():
            _remove(entry)


def _remove_stage(path: Path) -> None:
    """Remove a staging folder (never through a symbolic link of that name)."""
    if path.is_symlink() or not path.is_dir():
        if path.is_symlink():
            _remove(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def _atomic_text(path: Path, text: str) -> None:
    temp = path.with_name(temp_name(path.name))
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
