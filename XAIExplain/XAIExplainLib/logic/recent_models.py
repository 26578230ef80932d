"""The panel's "recently used models" list: which entries to keep and how to show them.

The widget stores the list in Slicer's settings (``qt.QSettings``, key
:data:`SETTINGS_KEY`) so that it survives sessions; the rules live here, where
they are tested: most recent first, no duplicates, at most :data:`LIMIT`, and
entries whose file or folder disappeared are dropped when the list is read.
"""
from __future__ import annotations

import os

SETTINGS_KEY = "XAIExplain/RecentModels"
LIMIT = 8


def normalise(source: str) -> str:
    """One spelling per model: absolute path, no trailing separator."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(source))))


def read_recent(stored) -> list:
    """The stored value (a list, one string, or None as QSettings gives it) as existing paths, newest first."""
    if stored is None:
        return []
    items = [stored] if isinstance(stored, str) else list(stored)
    seen, out = set(), []
    for item in items:
        if not item:
            continue
        path = normalise(item)
        if path not in seen and os.path.exists(path):
            seen.add(path)
            out.append(path)
    return out[:LIMIT]


def remember(recent, source: str) -> list:
    """``recent`` with ``source`` moved (or added) to the front, at most LIMIT entries."""
    path = normalise(source)
    return ([path] + [item for item in read_recent(recent) if item != path])[:LIMIT]


def describe(info: dict) -> str:
    """A menu tooltip / info line from ``logic.describeModel``: task, classes and expected input."""
    task = info.get("task") or "model"
    classes = ", ".join(info.get("classes") or []) or "-"
    return (f"{info.get('name', '')}: {task} ({info.get('spatialDims')}D); classes: {classes}; "
            f"input: {info.get('input')}")
