"""Public entry points: ``explain`` and ``explain_many`` on a batch of 2D or 3D inputs."""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import nn

from . import methods as _methods  # noqa: F401  (importing it registers every method)
from .normalize import display_values, minmax
from .reading import READING_OPTIONS, split_options
from .registry import check_applicable, check_methods, get_method
from .request import Request
from .validation import check_finite, check_input, check_model, is_in_place_input_error, writes_into_input


def model_device_dtype(model: nn.Module, fallback: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where and in which precision the model computes: its first parameter or buffer."""
    tensor = next((t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    return (fallback.device, fallback.dtype) if tensor is None else (tensor.device, tensor.dtype)


def as_network(model, layer=None):
    """``(torch module, layer)`` of what a caller passed as the model.

    A ``LoadedModel`` (what ``load_model`` returns: an object holding its network as
    ``module`` and its card as ``card``) explains its network at the card's default
    layer unless a layer is given; a torch module is used as it is. A model of several
    networks (nnU-Net folds) is refused here: ``explain_image`` averages their maps.
    """
    if isinstance(model, nn.Module) or not isinstance(getattr(model, "module", None), nn.Module) \
            or not hasattr(model, "card"):
        return model, layer
    if getattr(model, "ensemble", ()):
        raise ValueError(f"{type(model).__name__} '{model.card.name}' runs {1 + len(model.ensemble)} networks "
                         "(an ensemble); use XAIExplainLib.explain_image, which averages their maps, or explain "
                         "one of model.modules")
    if layer is None:
        layer = model.card.target_layers.default
    return model.module, layer


def _check_options(methods: Sequence[str], options: dict) -> None:
    accepted = {name for method in methods for name in get_method(method).options}
    unknown = sorted(set(options) - accepted)
    if unknown:
        per_method = "; ".join(f"{m}: {', '.join(get_method(m).options) or 'none'}" for m in methods)
        raise TypeError(f"unknown option(s) {unknown} for method(s) {list(methods)}; options accepted: {per_method}; "
                        f"for every method: {', '.join(READING_OPTIONS)}")


def explain_batch(model: nn.Module, x: torch.Tensor, methods: Sequence[str], target=None, layer=None,
                  normalize: bool = True, return_info: bool = False, layer_resolution: bool = False,
                  with_output: bool = False, **options):
    """:func:`explain_many` with the engine's internal flags (for ``explain_volume``'s batches).

    Returns a dict method name -> float32 tensor (N, *x.shape[2:]) on x's device; with
    ``return_info=True`` a pair (maps, info) where info holds per-method extras (e.g. the
    completeness error of Integrated Gradients) and the layers used. ``with_output=True``
    adds ``info["output"]``: the model's output on the unperturbed input, from a pass the
    methods ran anyway where there is one (so a caller gets the prediction and the maps
    from the same forward; methods with passes of their own, KWC and SAM, add a forward).

    ``layer_resolution=True`` (with ``normalize=False``) leaves the maps of one-layer CAM
    methods (CAM, Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM) at the layer's
    resolution, for a caller that resizes a whole volume of them at once.
    """
    if layer_resolution and normalize:
        raise ValueError("layer_resolution=True returns raw layer maps; pass normalize=False with it")
    model, layer = as_network(model, layer)
    check_model(model)
    methods = check_methods(methods)
    infos = [get_method(name) for name in methods]
    if isinstance(model, torch.jit.ScriptModule):
        check_applicable(methods, scripted=True, model_name="a TorchScript module")
    reading, options = split_options(options)
    _check_options(methods, options)
    check_input(model, x)
    device, dtype = model_device_dtype(model, x)
    inputs = x.detach().to(device=device, dtype=dtype)
    if inputs.data_ptr() == x.data_ptr():
        inputs = inputs.clone()  # the caller's tensor is never handed to the model
    version = None if inputs.is_inference() else inputs._version  # inference tensors keep no counter
    request = Request(model, inputs, target=target, layer=layer, options=options, reading=reading,
                      full_cam_pass=any(info.family == "cam" and info.needs_gradients for info in infos),
                      output_needed=with_output or any(info.needs_output for info in infos),
                      methods=tuple(methods))
    from .capture import explaining
    maps = {}
    try:
        # Only methods that neither differentiate nor read the output (Eigen-CAM: a forward under
        # inference mode, stopped at its layers) can skip freezing the parameters.
        freeze = any(info.needs_gradients or info.needs_output for info in infos)
        with explaining(model, reading.output_key, freeze=freeze):
            low_resolution = request.at_layer_resolution() if layer_resolution and any(
                info.layer_map_only for info in infos) else None
            for info in infos:
                raw = info.compute(low_resolution if low_resolution is not None and info.layer_map_only else request)
                raw = raw.detach().float()
                check_finite(model, raw, f"{info.name} map")
                maps[info.name] = minmax(display_values(raw, info.signed)) if normalize else raw
            if with_output:
                request.info["output"] = request.reference()[0].detach()
                check_finite(model, request.info["output"], "output")
    except RuntimeError as error:
        if not is_in_place_input_error(error):
            raise
        raise writes_into_input(model) from error
    if version is not None and inputs._version != version:  # every pass would have seen a different input
        raise writes_into_input(model)
    maps = {name: value.to(x.device) for name, value in maps.items()}
    if return_info:
        if request._layers is not None:
            request.info.setdefault("layers", [name for name, _ in request._layers])
        return maps, request.info
    return maps


def explain_many(model: nn.Module, x: torch.Tensor, methods: Sequence[str], target=None, layer=None,
                 normalize: bool = True, return_info: bool = False, **options):
    """Several maps for the same input, sharing passes: all CAM-family maps cost one forward + one backward.

    Returns a dict method name -> float32 tensor (N, *x.shape[2:]) on x's device; with
    ``return_info=True`` a pair (maps, info) where info holds per-method extras (e.g. the
    completeness error of Integrated Gradients) and the layers used. Arguments as :func:`explain`.
    Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM and LayerCAM all weight one layer's activations
    by its gradients (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, https://arxiv.org/abs/1610.02391), so they share
    one forward and one backward.
    """
    return explain_batch(model, x, methods, target=target, layer=layer, normalize=normalize,
                         return_info=return_info, **options)


def explain(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target=None, layer=None,
            normalize: bool = True, return_info: bool = False, **options):
    """One attribution map per sample: float32 (N, *x.shape[2:]) on x's device.

    model   a torch.nn.Module (2D or 3D; classifier (N, K) or segmenter (N, K, *S) output), or a
            LoadedModel (its network, at the card's default layer unless ``layer`` is given)
    x       (N, C, H, W) or (N, C, D, H, W) float tensor, preprocessed for the model
    method  a name from XAIExplainLib.METHODS
    target  None (predicted class), an int, N ints, or a segmentation target
    layer   dotted module name, a submodule, a list (multi-layer average), or None (default layer)
    normalize  per-sample min-max to [0, 1] (signed maps: of their magnitude); False gives raw maps
    options    the method's options, and for every method: output_key (which element of a tuple/dict
               output holds the logits), token_patch_size and reshape (how token layers map to grids)
    """
    maps, info = explain_many(model, x, [method], target=target, layer=layer, normalize=normalize,
                              return_info=True, **options)
    return (maps[method], info) if return_info else maps[method]
