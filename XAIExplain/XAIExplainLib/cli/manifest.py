"""The per-input record a run leaves in the output folder, and what a re-run reads from it.

``<stem>.xaiexplain.json`` is written last for each input, after all its files
are in place, and lists them with their sizes.  It records what made them:
the model's weights and card hashes, the methods and every option that
changes a result.  A re-run into the same folder reads it to decide, per
input, whether the outputs are complete and made the same way (skip), were
made another way (refuse unless ``--overwrite``), or are missing (compute).
The device and the worker are recorded but are not part of the identity: a
cohort started on a GPU may be finished on a CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import UserError, one_line
from .identity import identity_difference
from .small_files import MANIFEST_LIMIT, NotAFileError, plain_name, read_small_text
from .summary import InputRecord, json_safe

MANIFEST_ENDING = ".xaiexplain.json"
MANIFEST_FORMAT = 1

#: What :func:`resume_state` finds for an input.
COMPLETE, MISSING, DIFFERENT = "complete", "missing", "different"


def read_record_json(path: Path, *, not_a_file: str, unreadable: str) -> Any:
    """JSON this tool wrote into an output folder, read back as untrusted input.

    Read from a regular file only and with a size limit (:func:`small_files.read_small_text`);
    anything else is one :class:`UserError` naming ``path``: ``not_a_file`` after what the
    path is (a device, a FIFO ...), ``unreadable`` before the parser's reason.
    """
    try:
        return json.loads(read_small_text(path, MANIFEST_LIMIT))
    except NotAFileError as exc:
        raise UserError(path, f"{exc.problem}; {not_a_file}: remove it or choose another "
                              "--output-dir") from exc
    except (OSError, ValueError) as exc:
        raise UserError(path, f"{unreadable} ({one_line(exc)}); remove it or choose another "
                              "--output-dir") from exc


def manifest_name(stem: str) -> str:
    return stem + MANIFEST_ENDING


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(record: InputRecord, fingerprint: dict[str, Any],
                  sizes: dict[str, int], identity: dict[str, Any] | None = None) -> str:
    data = {"format": MANIFEST_FORMAT, "fingerprint": fingerprint, "input": identity,
            "files": [{"name": name, "bytes": sizes[name]} for name in record.outputs],
            "record": record.saved()}
    return json.dumps(json_safe(data), indent=2, allow_nan=False, sort_keys=False) + "\n"


def read_manifest(folder: Path, stem: str) -> dict[str, Any] | None:
    """The checked manifest of ``stem``, or None when there is none.

    A manifest is untrusted input (anyone who can write into the folder can
    write one, and a copied folder may hold another tool's file of that name):
    it is read with a size limit, only from a regular file, and every file
    name it lists must be a plain name of one of ``stem``'s outputs, all
    checked before anything acts on it.  Anything else is one
    :class:`UserError` naming the manifest.
    """
    path = folder / manifest_name(stem)
    if not os.path.lexists(path):
        return None
    data = read_record_json(path, not_a_file="an xaiexplain manifest is a small JSON file",
                            unreadable="is not a readable xaiexplain manifest")
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise UserError(path, "is not an xaiexplain manifest of this version; remove it or "
                              "choose another --output-dir")
    problem = _manifest_problem(data, stem)
    if problem:
        raise UserError(path, f"is not a valid xaiexplain manifest ({problem}); remove it or "
                              "choose another --output-dir")
    return data


def listed_outputs(folder: Path) -> tuple[set[str], list[str]]:
    """The files the manifests in ``folder`` list (outputs of this tool), and the manifests
    that could not be read (each one line)."""
    names: set[str] = set()
    problems: list[str] = []
    try:
        manifests = sorted(p.name for p in folder.iterdir() if p.name.endswith(MANIFEST_ENDING))
    except OSError:
        return names, problems
    for manifest in manifests:
        try:
            names.update(recorded_files(folder, manifest[: -len(MANIFEST_ENDING)]))
        except UserError as exc:
            problems.append(str(exc))
    return names, problems


def output_of(stem: str, name: object) -> bool:
    """``name`` is a plain file name that an output of ``stem`` can have (``<stem>_...``,
    ``<stem>.<ending>``), so a manifest or journal cannot point anywhere else."""
    return plain_name(name) and len(name) > len(stem) + 1 and name.startswith(stem) \
        and name[len(stem)] in "_." and name != manifest_name(stem)


def _manifest_problem(data: dict, stem: str) -> str:
    """What is wrong with the parts of a manifest a run acts on, or ``""``."""
    if not isinstance(data.get("fingerprint"), dict):
        return "its fingerprint is not an object"
    files = data.get("files")
    if not isinstance(files, list):
        return "its files are not a list"
    for number, entry in enumerate(files):
        if not isinstance(entry, dict):
            return f"files[{number}] is not an object with a name and a size"
        name, size = entry.get("name"), entry.get("bytes")
        if not output_of(stem, name):
            return f"files[{number}] names {name!r}, which is not a file name of {stem}'s outputs"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"files[{number}] has no size in bytes"
    if not isinstance(data.get("record", {}), dict):
        return "its record is not an object"
    identity = data.get("input")
    if identity is not None and not isinstance(identity, dict):
        return "its input is not an object"
    return ""


def resume_state(folder: Path, stem: str, fingerprint: dict[str, Any],
                 identity: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(COMPLETE | MISSING | DIFFERENT, what differs)`` for the outputs of ``stem``.

    What differs is said to follow "the outputs of <input>": ``were made with
    other settings (...)``, ``were made from another input (...)``.

    ``identity`` (:func:`.identity.input_identity`) is the input the outputs
    are for: outputs made from another scan, or from this file before it was
    rewritten, are DIFFERENT, never COMPLETE.
    """
    data = read_manifest(folder, stem)
    if data is None:
        return MISSING, ""
    if identity is not None:
        changed = identity_difference(data.get("input"), identity)
        if changed:
            return DIFFERENT, changed
    if data.get("fingerprint") != json_safe(fingerprint):
        return DIFFERENT, "were made with other settings (" + \
            _difference(data.get("fingerprint") or {}, json_safe(fingerprint)) + ")"
    for entry in data["files"]:
        path = folder / entry["name"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return MISSING, f"{entry['name']} is missing or changed"
    if (data.get("record") or {}).get("status") == "partial":
        return MISSING, "some methods could not run"  # retried with the rest
    return COMPLETE, ""


def recorded_files(folder: Path, stem: str) -> list[str]:
    """The file names the manifest of ``stem`` lists (none without a manifest)."""
    data = read_manifest(folder, stem)
    return [entry["name"] for entry in data["files"]] if data else []


def record_from_manifest(folder: Path, stem: str) -> InputRecord:
    """The summary row an earlier run wrote for ``stem`` (fields of another type are left out)."""
    data = read_manifest(folder, stem) or {"files": [], "record": {}}
    defaults = InputRecord("", stem)
    kept = {}
    for item in fields(InputRecord):
        value = data.get("record", {}).get(item.name)
        default = getattr(defaults, item.name)
        if value is not None and (type(value) is type(default)
                                  or (isinstance(default, float) and isinstance(value, int)
                                      and not isinstance(value, bool))):
            kept[item.name] = value
    kept["stem"] = stem
    kept["outputs"] = [entry["name"] for entry in data["files"]]
    return InputRecord(**{"input": "", **kept})


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first option that differs, said as ``name was X, now Y``."""
    for key in ("weights_sha256", "card_sha256", "methods"):
        if old.get(key) != new.get(key):
            what = {"weights_sha256": "the model's weights", "card_sha256": "the model card",
                    "methods": "the methods"}[key]
            return f"{what} differ (were {_short(old.get(key))}, now {_short(new.get(key))})"
    old_options, new_options = old.get("options", {}), new.get("options", {})
    for key in sorted(set(old_options) | set(new_options)):
        if old_options.get(key) != new_options.get(key):
            return (f"option {key} differs (was {old_options.get(key)!r}, now "
                    f"{new_options.get(key)!r})")
    return "the recorded settings differ"


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "..."
    return repr(value)
