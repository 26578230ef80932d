"""Whether a model needs ``trust=True``, asked without building or running anything it names.

The Slicer panel asks before it loads (``logic.trustNeeded(folder)``) so that it can show
the reason and let the user decide. Answering must not itself cross the trust boundary:
no network is built, no module outside the allow-list is imported, no checkpoint is
unpickled, no TorchScript or bundle config is run. Each form answers with the same checks
its loader makes first (:func:`.trust.check_card` for cards and bare state-dict files,
:func:`.nnunet.loader.inspect_nnunet` for nnU-Net folders, the bundle loader's own refusal,
:func:`.trust.check_torchscript`, :func:`.trust.check_exported_program`,
:func:`.onnx_network.read_onnx`), so the answer and the loader can never disagree.
"""
from __future__ import annotations

from pathlib import Path

from .card import ModelCard
from .errors import UntrustedModelError
from .trust import check_card, check_exported_program, check_torchscript


def trust_needed(source, **options) -> str:
    """Why loading ``source`` (as :func:`load_model` takes it) needs trust (the refusal), or "".

    Other problems (a missing file, a broken card) answer "": loading reports them.
    """
    try:
        _check(source, options)
    except UntrustedModelError as refusal:
        return str(refusal)
    except Exception:  # noqa: BLE001 - any other problem is the loader's to report
        return ""
    return ""


def _check(source, options: dict) -> None:
    from .forms import find_form
    from .search_paths import PACKAGE_MODELS, in_model_dirs, is_model_name, resolve_card_path, resolve_model_name

    if isinstance(source, ModelCard):
        check_card(source)
        return
    if is_model_name(source) and source in PACKAGE_MODELS and not in_model_dirs(source):
        PACKAGE_MODELS[source].check_files(options.get("folds", 5))
        return
    path = resolve_model_name(source) if is_model_name(source) else Path(source)
    form = find_form(path)
    if form.kind == "card":
        from .card import load_card

        check_card(load_card(resolve_card_path(path)))
    elif form.kind == "nnunet":
        from .nnunet.loader import inspect_nnunet

        inspect_nnunet(path, trust=False, mmap=True, **options)
    elif form.kind == "monai-bundle":
        from .monai_bundle import load_bundle

        load_bundle(path, trust=False, **options)  # refuses, with its reason, before the config is parsed
    elif form.kind == "torchscript":
        check_torchscript(path, False)
    elif form.kind == "exported-program":
        check_exported_program(path, False)
    elif form.kind == "onnx":
        from .onnx_network import read_onnx

        read_onnx(path, trust=False)  # reads the protobuf (data) and applies the ONNX trust rules
    else:
        from .file_description import describe_file

        sidecar = options.pop("sidecar", None)
        check_card(describe_file(path, "state_dict", options, sidecar))
