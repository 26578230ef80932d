"""XAIExplainLib.models: model cards, safe loading, bundled architectures.

    from XAIExplainLib.models import load_model, list_models
    m = load_model("ct-phase-2d")     # bundled name, model folder or card.json path
    m.module, m.card
    res = explain_image(m, image, methods=["gradcam"])   # maps on the image's own grid
"""
from .card import ModelCard, load_card, save_card
from .errors import ModelCardError, UntrustedModelError, WeightsError
from .loaded import LoadedModel
from .loading import load_model
from .search_paths import bundled_models_dir, list_models
from .pipeline import ExplainResult, explain_image, predict_image

__all__ = [
    "ExplainResult", "LoadedModel", "ModelCard", "ModelCardError", "UntrustedModelError",
    "WeightsError", "bundled_models_dir", "explain_image", "list_models", "load_card",
    "load_model", "predict_image", "save_card",
]
