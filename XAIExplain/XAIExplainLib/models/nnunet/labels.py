"""What each output channel of an nnU-Net network means, from dataset.json's labels.

Label-based training: one softmax channel per label value (0 = background, values
consecutive), named by the label. Region-based training (a label whose value is a list of
label values, with ``regions_class_order``): one sigmoid channel per foreground region, in
the order dataset.json lists them; the label map writes ``regions_class_order[k]`` where
channel k exceeds 0.5 (later channels win). Both follow nnU-Net's ``LabelManager``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelLabels:
    """Channel names in output order, the label value nnU-Net's label map writes for each channel,
    and the activation that turns logits into probabilities."""

    names: tuple[str, ...]
    activation: str  # "softmax" or "sigmoid"
    values: tuple[int, ...]


def channel_labels(dataset_json: dict, label_manager) -> ChannelLabels:
    """Names of the network's output channels (what ``--target NAME`` picks)."""
    labels = {k: v for k, v in dataset_json["labels"].items() if k != "ignore"}
    if label_manager.has_regions:
        names = tuple(name for name, value in labels.items() if name != "background" and not _is_background(value))
        return ChannelLabels(names, "sigmoid", tuple(int(v) for v in label_manager.regions_class_order))
    by_value = {int(value): name for name, value in labels.items() if not isinstance(value, (list, tuple))}
    names = tuple(by_value.get(value, f"label {value}") for value in label_manager.all_labels)
    return ChannelLabels(names, "softmax", tuple(int(v) for v in label_manager.all_labels))


def _is_background(value) -> bool:
    values = set(value) if isinstance(value, (list, tuple)) else {value}
    return values == {0}
