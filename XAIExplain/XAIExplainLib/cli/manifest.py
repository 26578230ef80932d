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
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .summary import InputRecord, json_safe

MANIFEST_ENDING = ".xaiexplain.json"
MANIFEST_FORMAT = 1

#: What :func:`resume_state` finds for an input.
COMPLETE, MISSING, DIFFERENT = "complete", "missing", "different"


def manifest_name(stem: str) -> str:
    return stem + MANIFEST_ENDING


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(record: InputRecord, fingerprint: dict[str, Any],
                  sizes: dict[str, int]) -> str:
    data = {"format": MANIFEST_FORMAT, "fingerprint": fingerprint,
            "files": [{"name": name, "bytes": sizes[name]} for name in record.outputs],
            "record": record.saved()}
    return json.dumps(json_safe(data), indent=2, allow_nan=False, sort_keys=False) + "\n"


def read_manifest(folder: Path, stem: str) -> dict[str, Any] | None:
    """The parsed manifest of ``stem``, or None when there is none (or it is not ours)."""
    path = folder / manifest_name(stem)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(path, f"is not a readable xaiexplain manifest ({exc}); remove it or "
                              "choose another --output-dir") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise UserError(path, "is not an xaiexplain manifest of this version; remove it or "
                              "choose another --output-dir")
    return data


def resume_state(folder: Path, stem: str, fingerprint: dict[str, Any]) -> tuple[str, str]:
    """``(COMPLETE | MISSING | DIFFERENT, what differs)`` for the outputs of ``stem``."""
    data = read_manifest(folder, stem)
    if data is None:
        return MISSING, ""
    if data.get("fingerprint") != json_safe(fingerprint):
        return DIFFERENT, _difference(data.get("fingerprint") or {}, json_safe(fingerprint))
    for entry in data.get("files", []):
        path = folder / entry["name"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return MISSING, f"{entry['name']} is missing or changed"
    if (data.get("record") or {}).get("status") == "partial":
        return MISSING, "some methods could not run"  # retried with the rest
    return COMPLETE, ""


def recorded_files(folder: Path, stem: str) -> list[str]:
    """The file names the manifest of ``stem`` lists (none without a manifest)."""
    data = read_manifest(folder, stem)
    return [entry["name"] for entry in data.get("files", [])] if data else []


def record_from_manifest(folder: Path, stem: str) -> InputRecord:
    """The summary row an earlier run wrote for ``stem``."""
    data = read_manifest(folder, stem) or {}
    known = {f.name for f in fields(InputRecord)}
    return InputRecord(**{k: v for k, v in data.get("record", {}).items() if k in known})


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
