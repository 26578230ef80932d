"""What a caller hands ``explain_image`` / ``predict_image`` as the image, made into the one image a pipeline takes.

A model with C > 1 input channels (multi-sequence MRI: nnU-Net's ``channel_names``, a card's
``input.channels`` and ``input.channel_names``, a bundle's ``num_channels``) takes C images:

- a list or tuple of ``SimpleITK.Image`` objects or paths, in the model's channel order;
- a dict keyed by the model's channel names (any order);
- or, as before, one vector image with C components per voxel.

The images become one vector image on the first image's grid (:func:`imaging.channels.stack_channels`):
resampled onto it for card and bundle models, stacked voxel by voxel for nnU-Net (its own rule; a
pipeline says so with ``resample_channels = False``). Maps and predictions therefore land on the
first image's grid.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import SimpleITK as sitk

from .loaded import LoadedModel


def model_image(loaded: LoadedModel, image) -> sitk.Image:
    """``image`` (one image or path, or one per channel) as the one ``SimpleITK.Image`` ``loaded``'s pipeline takes."""
    names = loaded.card.input.channel_labels
    if isinstance(image, Mapping):
        image = _in_channel_order(loaded, image, names)
    if isinstance(image, (list, tuple)):
        if len(image) != len(names):
            raise ValueError(f"model '{loaded.card.name}' takes {_count(names)}; got a list of {len(image)} "
                             "image(s)")
        labels = [_label(item, name) for item, name in zip(image, names)]
        images = [read_input_image(item, label) for item, label in zip(image, labels)]
        return stack_for(loaded, images, labels)
    single = read_input_image(image)
    check_one_image(loaded, single)
    return single


def check_one_image(loaded: LoadedModel, image: sitk.Image) -> None:
    """Refuse one scalar image for a model with several input channels, saying what to give instead."""
    names = loaded.card.input.channel_labels
    if len(names) > 1 and image.GetNumberOfComponentsPerPixel() == 1:
        raise ValueError(f"model '{loaded.card.name}' takes {_count(names)}; got one image with one value per "
                         f"voxel. Give one image per channel in the order {', '.join(names)} (a list, or a dict "
                         "keyed by those names)")


def stack_for(loaded: LoadedModel, images: Sequence[sitk.Image], labels: Sequence[str]) -> sitk.Image:
    """Images read already, one per channel in channel order, stacked by ``loaded``'s rule (the command
    line and the Slicer logic read their own files and volumes, then come here)."""
    from ..imaging.channels import stack_channels

    names = loaded.card.input.channel_labels
    if len(images) != len(names):
        raise ValueError(f"model '{loaded.card.name}' takes {_count(names)}; got {len(images)} image(s): "
                         f"{', '.join(labels)}")
    return stack_channels(list(images), list(labels), resample=resamples_channels(loaded))


def resamples_channels(loaded: LoadedModel) -> bool:
    """Whether channel images on other grids are resampled onto the first one's (the default) or must
    share it (a pipeline with ``resample_channels = False``: nnU-Net stacks its channels voxel by voxel)."""
    return bool(getattr(loaded.pipeline, "resample_channels", True))


def read_input_image(image, label: str | None = None) -> sitk.Image:
    """The image, read when a path is given, refused when it holds NaN or infinite voxels (the input rule
    of every entry point, :func:`engine.validation.non_finite_problem`: a window would clip ``+Inf``)."""
    from ..engine.validation import non_finite_problem

    source = label or "the image"
    if isinstance(image, (str, os.PathLike)):
        from ..imaging.reading import read_image

        if not os.path.exists(image):
            raise FileNotFoundError(f"image not found: {image}")
        source, image = label or str(image), read_image(image)
    elif not isinstance(image, sitk.Image):
        raise TypeError(f"{'image' if label is None else label} must be a SimpleITK.Image or a path SimpleITK "
                        f"can read, got {type(image).__name__}")
    problem = non_finite_problem(sitk.GetArrayViewFromImage(image))
    if problem:
        raise ValueError(f"{source} {problem}")
    return image


def _in_channel_order(loaded: LoadedModel, images: Mapping, names: Sequence[str]) -> list:
    """A dict keyed by channel name -> its values in the model's channel order (every name exactly once)."""
    keys = [str(key) for key in images]
    missing = [name for name in names if name not in keys]
    unknown = [key for key in keys if key not in names]
    if missing or unknown:
        said = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                           f"unknown {', '.join(unknown)}" if unknown else "") if part)
        raise ValueError(f"model '{loaded.card.name}' takes {_count(names)}; the dict's keys do not match ({said})")
    by_name = {str(key): value for key, value in images.items()}
    return [by_name[name] for name in names]


def _label(item, name: str) -> str:
    """How a message names one channel's image: its path and channel, or the channel alone."""
    return f"{os.fspath(item)} ({name})" if isinstance(item, (str, os.PathLike)) else f"the {name} image"


def _count(names: Sequence[str]) -> str:
    if len(names) == 1:
        return "one image"
    return f"{len(names)} images, one per input channel ({', '.join(names)})"
