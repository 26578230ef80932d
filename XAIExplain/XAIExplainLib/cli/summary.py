"""The run's record: ``summary.json`` for programs and ``summary.csv`` for spreadsheets.

A cohort audit is read back long after the run: which inputs succeeded, what
the model predicted, how long each method took, on which device, and why an
input failed.  One row per input, written once at the end of the run (and
also when the run is interrupted, for what was done), through the same
atomic writer as the images.  Each row also says which worker and device
computed it, and whether it was skipped as complete from an earlier run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"


@dataclass
class InputRecord:
    """What happened to one input."""

    #: The input as given (a path that opens from the working folder; a DICOM folder's series).
    input: str
    stem: str
    status: str = "pending"  # "ok", "partial" (some methods written, ``error`` names the rest) or "failed"
    error: str = ""
    prediction: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The process that computed it (a Dask worker's address, or host:pid) and its device.
    worker: str = ""
    device: str = ""
    #: True when an earlier run into the folder had made it, with the same model and options.
    skipped: bool = False
    #: ``list.txt:N`` when the input was line N of a list file, else empty.
    listed_in: str = ""
    #: With --debug: the traceback of a failure, printed by the run, not kept in the summary.
    traceback: str = field(default="", repr=False)

    @classmethod
    def for_input(cls, item, **values) -> "InputRecord":
        """The record of a discovered input (``cli.discovery.InputItem``): its plain path, the list line."""
        return cls(item.plain, item.stem, listed_in=item.listed_in, **values)

    def name_input(self, item) -> "InputRecord":
        """Point a record read back from a manifest at ``item`` as discovered in this run."""
        self.input, self.listed_in = item.plain, item.listed_in
        return self

    def saved(self) -> dict[str, Any]:
        """The fields summary.json and the manifest keep."""
        data = asdict(self)
        data.pop("traceback")
        return data

    def flat(self) -> dict[str, Any]:
        """One CSV row: prediction and timings spread over named columns.

        The columns are the same for every input of a run: a value keyed by an output's name
        (``<stem>_<method>``, e.g. the label threshold each map used) is named by the method alone."""
        row: dict[str, Any] = {"input": self.input, "listed_in": self.listed_in, "stem": self.stem,
                               "status": self.status, "error": self.error}
        own = f"{self.stem}_"
        for key, value in self.prediction.items():
            if isinstance(value, dict):
                for name, number in value.items():
                    name = str(name)
                    row[f"{key}_{name[len(own):] if name.startswith(own) else name}"] = _number(number)
            elif not isinstance(value, (list, tuple)):
                row[key] = _number(value)
        for name, seconds in self.timings.items():
            row[f"time_{name}_s"] = round(float(seconds), 4)
        row["seconds"] = round(self.seconds, 3)
        row["skipped"] = self.skipped
        row["worker"] = self.worker
        row["device"] = self.device
        row["outputs"] = ";".join(self.outputs)
        return row


@dataclass
class RunSummary:
    """The whole run: options, device and one :class:`InputRecord` per input."""

    command: str
    model: str = ""
    model_source: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    device: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    records: list[InputRecord] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    interrupted: bool = False
    #: Files of the run that could not be written (the summary itself): each one line.
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[InputRecord]:
        return [r for r in self.records if r.status not in ("ok", "partial")]

    @property
    def succeeded(self) -> list[InputRecord]:
        """Inputs whose outputs were written (``partial`` ones included: some methods failed)."""
        return [r for r in self.records if r.status in ("ok", "partial")]

    @property
    def partial(self) -> list[InputRecord]:
        return [r for r in self.records if r.status == "partial"]

    @property
    def skipped(self) -> list[InputRecord]:
        return [r for r in self.records if r.skipped]

    def to_json(self) -> str:
        data = {
            "command": self.command,
            "model": self.model,
            "model_source": self.model_source,
            "methods": self.methods,
            "device": self.device,
            "options": self.options,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "host": {"python": platform.python_version(), "platform": platform.platform()},
            "counts": {"inputs": len(self.records), "ok": len(self.succeeded),
                       "failed": len(self.failed), "partial": len(self.partial),
                       "skipped": len(self.skipped)},
            "inputs": [r.saved() for r in self.records],
        }
        return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"

    def to_csv(self) -> str:
        rows = [dict(r.flat(), device=r.device or self.device) for r in self.records]
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        # Keep the columns a reader looks for first at the front, outputs last.
        front = [c for c in ("input", "listed_in", "stem", "status", "error") if c in columns]
        back = [c for c in ("seconds", "skipped", "worker", "device", "outputs") if c in columns]
        columns = front + [c for c in columns if c not in front and c not in back] + back
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        return buffer.getvalue()


def model_source(loaded) -> dict[str, Any]:
    """Which model ran, read back long after: its form, resolved path and weights SHA-256.

    A cascade stage (nnU-Net ``3d_cascade_fullres``) also names the stage the maps explain and the first
    stage whose segmentation it read (a folder the command line never named: it was found beside the
    model), with the card's description saying so in words."""
    source = getattr(loaded, "source", None)
    out = {"kind": getattr(loaded, "kind", ""), "path": "" if source is None else str(source),
           "weights_sha256": getattr(loaded, "weights_sha256", None) or ""}
    card = getattr(loaded, "card", None)
    stage = (getattr(card, "extra", None) or {}).get("nnunet") or {}
    if stage.get("previous_stage"):
        out.update(explained_stage=stage["explained_stage"], previous_stage=json_safe(stage["previous_stage"]),
                   note=card.description)
    return out


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else ""
    return value


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars become Python numbers, non-finite floats become null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
