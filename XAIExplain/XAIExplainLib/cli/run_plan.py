"""The settings of an explain run, checked once, and what each process makes of them.

Both faces of a cohort run, the command line (``xaiexplain explain``) and the
Python API (:func:`.cohort.explain_cohort`), build one frozen
:class:`ExplainSettings` with :func:`explain_settings`: every option that
does not depend on an input is checked there, before anything is read.
:func:`plan` then loads the model once to check the options that depend on it
(layer, classes, mode, region), discovers the inputs and records the run's
fingerprint (what makes its outputs: the weights, the card, the methods and
the options).  The settings travel to Dask workers as they are; each process
turns them into a :class:`LoadedRun` (the model loaded, the classes resolved,
the region read) once, with :func:`load_run`.

This module is the one place those steps live: the command, the cohort loop,
the unit of work and the cluster code import it, and it imports none of them.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import SimpleITK as sitk

from .discovery import InputItem, discover
from .errors import UserError
from .manifest import file_sha256
from .options import (ClassChoice, check_device, check_jobs, check_layer, check_methods,
                      check_methods_for, load_model_or_fail, parse_label_threshold,
                      parse_method_options, resolve_targets)
from .reading import read_image
from .summary import model_source
from .writing import OutputFolder


@dataclass(frozen=True)
class ExplainSettings:
    """Every option of an explain run, checked once; travels to the workers as it is."""

    model: str
    methods: tuple[str, ...]
    targets: tuple[str, ...] | None = None
    layer: str | None = None
    mode: str | None = None
    axis: str | None = None
    device: str = "auto"
    fmt: str | None = None
    label_threshold: float | str | None = None
    overlay: bool = False
    region: str | None = None
    trust: bool = False
    overwrite: bool = False
    debug: bool = False
    memory_budget_mb: float | None = None
    #: ``--modality``: the input pipeline of a model with one per modality (None: from each image).
    modality: str | None = None
    #: ``--option`` values of the methods, as sorted (name, value) pairs (see options.parse_method_options).
    method_options: tuple[tuple[str, Any], ...] = ()
    #: ``local:N`` or a scheduler's address; None runs the inputs in this process.
    cluster: str | None = None
    #: Reader threads of an in-process run (0: read in turn).
    jobs: int = 1
    #: torch CPU threads of the process that runs the inputs (None: leave torch's default).
    threads: int | None = None
    #: What made the outputs (weights and card hashes, methods, options): see :func:`fingerprint`.
    fingerprint: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Which model ran (form, resolved path, weights SHA-256), for the summary: see summary.model_source.
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def model_key(self) -> tuple:
        return (self.model, self.trust, self.device, self.fingerprint.get("weights_sha256"))

    @property
    def remote(self) -> bool:
        """The inputs run on Dask workers, which load the model themselves."""
        return self.cluster is not None


def explain_settings(model: str | os.PathLike, methods: str | Sequence[str], *,
                     targets: Sequence[str | int] | None = None, layer: str | None = None,
                     mode: str | None = None, axis: str | None = None, device: str = "auto",
                     format: str | None = None, label_threshold: float | str | None = None,
                     overlay: bool = False, region: str | os.PathLike | None = None,
                     trust: bool = False, overwrite: bool = False, debug: bool = False,
                     memory_budget_mb: float | None = None, modality: str | None = None,
                     options: Sequence[str] | None = None, cluster: str | None = None,
                     jobs: int = 1) -> ExplainSettings:
    """The checked settings of a run: everything that needs neither the model nor an input.

    ``options`` are ``NAME=VALUE`` pairs of the chosen methods (``--option``).
    Every problem is a :class:`UserError` naming the option.
    """
    names = check_methods([methods] if isinstance(methods, str) else list(methods))
    method_options = parse_method_options(options, names)
    threshold = parse_label_threshold(None if label_threshold is None else str(label_threshold))
    check_jobs(jobs)
    if memory_budget_mb is not None and not memory_budget_mb > 0:
        raise UserError(f"--memory-budget {memory_budget_mb:g}",
                        "must be a positive number of megabytes")
    if cluster is not None:
        from .cluster import parse_cluster, require_dask

        parse_cluster(cluster)
        require_dask()
    # A scheduler elsewhere has its own devices: "cuda" is checked there, by the workers.
    if not (cluster and "://" in cluster):
        check_device(device)
    if region is not None and str(region).strip().lower() == "predicted":
        region = None
    return ExplainSettings(
        model=str(model), methods=tuple(names),
        targets=tuple(str(t) for t in targets) if targets else None, layer=layer, mode=mode,
        axis=axis, device=device, fmt=format, label_threshold=threshold, overlay=overlay,
        region=None if region is None else str(region), trust=trust, overwrite=overwrite,
        debug=debug, memory_budget_mb=memory_budget_mb,
        modality=None if modality is None or str(modality).strip().lower() in ("", "auto") else str(modality).strip(),
        method_options=tuple(sorted(method_options.items())), cluster=cluster, jobs=jobs)


class Plan(NamedTuple):
    """What :func:`plan` found: the settings with their fingerprint, the inputs, the model."""

    settings: ExplainSettings
    items: list[InputItem]
    #: The model loaded to check the options; None when workers load their own.
    model: Any
    #: Lines to show the user before the run (inputs left out on purpose, and why).
    notes: list[str]


def plan(settings: ExplainSettings, inputs: Sequence[str | os.PathLike],
         output_dir: str | os.PathLike | None = None, remote: bool = False) -> Plan:
    """Load the model once to check the options against it, and discover the inputs.

    ``remote``: the inputs run on Dask workers (also when a client is handed
    over rather than a ``cluster``), whose workers load the model
    themselves; the model loaded here (on the CPU) is then not returned.
    """
    remote = remote or settings.remote
    device = settings.device if remote else check_device(settings.device)
    notes: list[str] = []
    model = load_model_or_fail(settings.model, "cpu" if remote else device, settings.trust)
    card = model.card
    # the model first: with several input channels an input may be one file per channel
    items = discover([str(i) for i in inputs], output_dir=output_dir, notes=notes,
                     channels=card.input.channel_labels)
    check_methods_for(list(settings.methods), model)
    check_layer(list(settings.methods), model, settings.layer)
    resolve_targets(settings.targets, card)
    _check_mode(settings.mode, card)
    settings = _check_modality(settings, card)
    if settings.region is not None:
        if card.task != "segmentation":
            raise UserError(f"--region {settings.region}", f"applies to segmentation models; "
                                                           f"'{card.name}' is a {card.task} model")
        read_image(Path(settings.region))
    settings = dataclasses.replace(settings, device=settings.device if remote else device)
    settings = dataclasses.replace(fingerprint(settings, model), source=model_source(model))
    return Plan(settings, items, None if remote else model, notes)


def _check_modality(settings: ExplainSettings, card) -> ExplainSettings:
    """``--modality`` against the model's input pipelines, spelled as the card spells it."""
    if settings.modality is None:
        return settings
    from ..models.modality import choose_modality

    try:
        chosen = choose_modality(card, None, settings.modality).modality
    except ValueError as error:
        raise UserError(f"--modality {settings.modality}", str(error)) from None
    return dataclasses.replace(settings, modality=chosen)


def _check_mode(mode: str | None, card) -> None:
    from ..engine.modes import resolve_mode

    try:
        resolve_mode(mode, None, card.spatial_dims, model_name=f"model '{card.name}'")
    except ValueError as error:
        raise UserError(f"--mode {mode}", str(error)) from None


def fingerprint(settings: ExplainSettings, model) -> ExplainSettings:
    """``settings`` with what makes its outputs: the model's hashes, the methods, the options."""
    card = model.card
    options = {
        "targets": [c.name for c in resolve_targets(settings.targets, card)],
        "layer": settings.layer, "mode": settings.mode, "axis": settings.axis,
        "format": settings.fmt, "label_threshold": settings.label_threshold,
        "overlay": settings.overlay,
        "region_sha256": file_sha256(settings.region) if settings.region else None,
        "method_options": dict(settings.method_options),
    }
    if settings.modality is not None:  # only when named: a folder from a run without the option still resumes
        options["modality"] = settings.modality
    return dataclasses.replace(settings, fingerprint={
        "model": card.name, "weights_sha256": weights_digest(model),
        "card_sha256": file_sha256(card.path) if card.path else None,
        "methods": list(settings.methods), "options": options})


def weights_digest(model) -> str | None:
    """SHA-256 of the model's weights: the loader's, the card's checked value, or the file's."""
    known = getattr(model, "weights_sha256", None) or model.card.weights.sha256
    if known:
        return known
    path = getattr(model.card.weights, "file", None)
    return file_sha256(path) if path is not None and Path(path).is_file() else None


def check_same_model(settings: ExplainSettings, model) -> None:
    """A worker's model must be the one the run was checked with (a shared file may change)."""
    expected = settings.fingerprint.get("weights_sha256")
    if expected and weights_digest(model) != expected:
        raise ValueError(f"the weights of model {settings.model} seen by this worker "
                         f"({weights_digest(model)[:12]}...) differ from those the run was "
                         f"started with ({expected[:12]}...)")


@dataclass
class LoadedRun:
    """The settings made concrete in one process: the model loaded, classes resolved, region read.

    Built once per process and model (:func:`.explain_one.job_for`) and
    shared by every input that process explains.
    """

    model: Any
    methods: list[str]
    choices: list[ClassChoice]
    layer: str | None
    mode: str | None
    axis_name: str | None
    device: str
    fmt: str | None
    label_threshold: float | str | None
    overlay: bool
    region: sitk.Image | None
    region_source: str
    out: OutputFolder
    debug: bool = False
    memory_budget_mb: float | None = None
    method_options: dict = field(default_factory=dict)
    modality: str | None = None

    @property
    def card(self):
        return self.model.card


def load_run(settings: ExplainSettings, output_dir: Path, model=None) -> LoadedRun:
    """The :class:`LoadedRun` of ``settings`` in this process (a worker loads the model here)."""
    device = check_device(settings.device)
    if model is None:
        model = load_model_or_fail(settings.model, device, settings.trust)
        check_same_model(settings, model)
    region = read_image(Path(settings.region)) if settings.region else None
    return LoadedRun(model=model, methods=list(settings.methods),
                     choices=resolve_targets(settings.targets, model.card), layer=settings.layer,
                     mode=settings.mode, axis_name=settings.axis, device=device,
                     fmt=settings.fmt, label_threshold=settings.label_threshold,
                     overlay=settings.overlay, region=region,
                     region_source=settings.region or "",
                     out=OutputFolder(output_dir, overwrite=settings.overwrite),
                     debug=settings.debug, memory_budget_mb=settings.memory_budget_mb,
                     method_options=dict(settings.method_options), modality=settings.modality)
