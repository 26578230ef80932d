"""XAIExplainLib.models: model cards, safe loading, bundled architectures.

    from XAIExplainLib.models import load_model, list_models
    m = load_model("ct-phase-2d")     # bundled name, model folder or card.json path
    m.module, m.card
"""
from .card import ModelCard, load_card, save_card
from .errors import ModelCardError, UntrustedModelError, WeightsError
from .loaded import LoadedModel
from .loading import bundled_models_dir, list_models, load_model

__all__ = [
    "LoadedModel", "ModelCard", "ModelCardError", "UntrustedModelError", "WeightsError",
    "bundled_models_dir", "list_models", "load_card", "load_model", "save_card",
]
