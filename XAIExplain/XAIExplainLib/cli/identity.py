"""Which scan an input is, so that a resume never hands one scan's outputs to another.

A stem names outputs, not scans: ``a/ct.nrrd`` and ``b/ct.nrrd`` both want the
stem ``ct``, and a file overwritten with a new scan keeps its name.  Each
manifest therefore records the input's identity: its resolved path, its size,
its modification time and a SHA-256 over its beginning and end (the header
and the first and last voxels, or each DICOM slice's header), and a resume
reuses outputs only when all of them match.  Hashing a sample rather than the
whole file keeps the check to a few milliseconds per input; the size and the
modification time catch a rewrite the sample would miss.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


#: Bytes hashed at the start and at the end of an image file.
SAMPLE = 1 << 20
#: Bytes hashed at the start of each DICOM slice (its header and first rows).
SLICE_SAMPLE = 1 << 16


def input_identity(item) -> dict[str, Any] | None:
    """``{path, bytes, mtime_ns, sha256}`` of an input's file or slice files; None if unreadable.

    ``item`` is a :class:`.discovery.InputItem` (its ``path``, DICOM ``files`` or channel files).
    """
    files = list(item.paths)
    digest = hashlib.sha256()
    total, latest = 0, 0
    try:
        for path in files:
            info = os.stat(path)
            total += info.st_size
            latest = max(latest, info.st_mtime_ns)
            digest.update(f"{path.name}\0{info.st_size}\0".encode())
            _sample(path, info.st_size, SLICE_SAMPLE if item.files else SAMPLE, digest)
    except OSError:
        return None
    return {"path": os.path.realpath(item.path), "bytes": total, "mtime_ns": latest,
            "sha256": digest.hexdigest(), **({"slices": len(files)} if item.files else {})}


def _sample(path: Path, size: int, sample: int, digest) -> None:
    if not os.path.isfile(path):  # a device or a FIFO is refused by the reader, never hashed here
        return
    with open(path, "rb") as handle:
        digest.update(handle.read(sample))
        if size > 2 * sample:
            handle.seek(size - sample)
            digest.update(handle.read(sample))
        elif size > sample:
            digest.update(handle.read())


def identity_difference(old: Any, new: dict[str, Any] | None) -> str:
    """How the recorded identity ``old`` differs from ``new``, said to follow "the outputs of X"
    (``""`` when they are one input)."""
    if new is None:
        return ""  # unreadable now: the input fails on reading, with its own message
    if not isinstance(old, dict):
        return "were made without a record of their input (by an earlier version)"
    if old.get("path") != new["path"]:
        return f"were made from another input ({old.get('path')})"
    changes = [what for key, what in (("bytes", "its size"), ("mtime_ns", "its modification time"),
                                      ("sha256", "its content"))
               if old.get(key) != new.get(key)]
    if changes:
        return f"were made before the input changed ({', '.join(changes)})"
    return ""
