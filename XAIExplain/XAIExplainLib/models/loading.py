"""Load a model of any form: the one entry point of the API, the CLI and the panel.

``load_model`` accepts a bundled model name or a path of any model form (see
:mod:`models.forms`) and dispatches: names are looked up in
:mod:`models.search_paths`, paths go to the form that recognises them. The
pieces the forms share live in their own modules so that no form imports this
dispatcher: :mod:`models.weights_io` (weight readers and checksums),
:mod:`models.network_checks` (the network against its description) and
:mod:`models.card_loader` (the card form). What can run code needs
``trust=True`` (:mod:`models.trust`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..engine.devices import resolve_device
from .card import ModelCard
from .card_loader import load_card_model
from .forms import find_form
from .loaded import LoadedModel
from .search_paths import PACKAGE_MODELS, in_model_dirs, is_model_name, resolve_model_name


def load_model(source: str | os.PathLike | ModelCard, *, trust: bool = False,
               device: str | torch.device = "cpu", check: bool = True,
               **options) -> LoadedModel:
    """Load a model of any form: the one entry point of the API, the CLI and the panel.

    Parameters
    ----------
    source:
        A bundled or configured model name (see :func:`list_models`; never a
        folder of that name in the working directory), a path of any form in
        :mod:`models.forms` (card folder or card.json, TorchScript file,
        state-dict file, ...), or an already parsed :class:`ModelCard`.
    trust:
        Allow what can run code or reach outside the model (see
        :mod:`models.trust`): pickled modules, TorchScript, architectures
        outside the allowed libraries, files outside the model's folder.
    device:
        ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a torch device.
    check:
        Run one tiny forward pass to verify that the description's channel and
        class counts agree with the network.
    options:
        Form-specific options: the input description of a bare file (see
        :mod:`models.file_description`), an nnU-Net folder's ``folds``, ...; each
        form refuses options it does not know.
    """
    if isinstance(source, ModelCard):
        loaded = load_card_model(source, trust=trust, check=check, **options)
    elif is_model_name(source) and source in PACKAGE_MODELS and not in_model_dirs(source):
        loaded = PACKAGE_MODELS[source].load(trust=trust, check=check, **options)
    else:
        path = resolve_model_name(source) if is_model_name(source) else Path(source)
        loaded = find_form(path).load(path, trust=trust, check=check, **options)
    return loaded.to(resolve_device(device))
