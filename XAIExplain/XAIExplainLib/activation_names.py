"""The words for a model's output activation, without torch: what a model card may say.

The rules that apply them live in :mod:`engine.activations` (which re-exports these names); the
words are kept apart so that reading a model card (``models.card``, e.g. to list the models) does
not import the engine and torch with it.
"""
from __future__ import annotations

SOFTMAX, SIGMOID, NONE = "softmax", "sigmoid", "none"
#: A segmentation target's word for "the class logits themselves" (Seg-Grad-CAM's score).
LOGITS = "logits"
#: How a model's output becomes probabilities: a model card's ``output.activation``.
OUTPUT_ACTIVATIONS = (SOFTMAX, SIGMOID, NONE)
#: What a caller may ask for: the above, ``"auto"``, and None for "none".
ACTIVATIONS = ("auto", SOFTMAX, SIGMOID, None)
