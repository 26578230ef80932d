"""Class-specific ROI maps (Kim, Rajaraman, Antani 2019): where a class's evidence usually lies.

The mean, over a set of images of one class, of each image's CRM normalised by its
maximum (the paper's display normalisation). Run it over all training or test images of
a class to see the region the classifier relies on for that class.
"""
from __future__ import annotations

from typing import Iterable, Union

import torch
from torch import nn

Images = Union[torch.Tensor, Iterable[torch.Tensor]]


def _batches(images: Images, batch_size: int):
    if isinstance(images, torch.Tensor):
        if images.dim() not in (4, 5):
            raise ValueError(f"images must be a batch (N, C, H, W) or (N, C, D, H, W), or an iterable of "
                             f"batches; got shape {tuple(images.shape)}")
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size]
    else:
        for batch in images:
            if not isinstance(batch, torch.Tensor):
                raise TypeError(f"every item of images must be a tensor batch, got {type(batch).__name__}")
            yield batch


def crm_roi_map(model: nn.Module, images: Images, class_index: int | None = None, layer=None,
                batch_size: int = 16, crm_mode: str = "closed", crm_classes: str = "all") -> torch.Tensor:
    """Mean of max-normalised CRM maps over ``images`` (all of one class): a float32 map (*S).

    images       a tensor (N, C, *S) or an iterable of such batches (e.g. a DataLoader's images)
    class_index  the images' class, used by ``crm_classes="target"``; None uses each
                 image's predicted class
    layer        the last convolutional layer before global average pooling (None: default)
    """
    from ..api import explain  # the api imports the methods package, so import it when called

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    total, count = None, 0
    for batch in _batches(images, batch_size):
        maps = explain(model, batch, "crm", target=class_index, layer=layer, normalize=False,
                       crm_mode=crm_mode, crm_classes=crm_classes)
        peak = maps.flatten(1).amax(dim=1).reshape((-1,) + (1,) * (maps.dim() - 1))
        normalised = torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny),
                                 torch.zeros_like(maps))
        total = normalised.sum(dim=0) if total is None else total + normalised.sum(dim=0)
        count += maps.shape[0]
    if count == 0:
        raise ValueError("images is empty: give at least one image of the class")
    return total / count
