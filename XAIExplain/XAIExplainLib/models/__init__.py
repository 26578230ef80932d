"""XAIExplainLib.models: model cards, safe loading, bundled architectures.

    from XAIExplainLib.models import load_model, list_models
    m = load_model("ct-phase-2d")     # bundled name, model folder or card.json path
    m.module, m.card
    res = explain_image(m, image, methods=["gradcam"])   # maps on the image's own grid

The names are loaded on first use (PEP 562): listing the models (:mod:`models.search_paths`) and
reading cards import no torch; loading or running a model does.
"""
from __future__ import annotations

import importlib

#: public name -> the submodule that defines it
_EXPORTS = {
    "ModelCard": "card", "load_card": "card", "save_card": "card",
    "ModelCardError": "errors", "UntrustedModelError": "errors", "WeightsError": "errors",
    "LoadedModel": "loaded",
    "bundled_models_dir": "search_paths", "list_models": "search_paths",
    "load_model": "loading",
    "ExplainResult": "pipeline", "explain_image": "pipeline", "predict_image": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
