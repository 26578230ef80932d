"""Registration of the engine's core methods: the CAM family and input-gradient methods."""
from __future__ import annotations

from . import cam as cams
from . import gradients
from .registry import CLASSIFICATION, MethodInfo, register
from .request import Request
from .targets import BoundClassTarget


def _gradient_cam(formula):
    def compute(request: Request):
        result = request.cam_pass()
        return request.per_layer(lambda name, _: formula(result.activations[name], result.gradients[name]))
    return compute


def _class_activation_map(request: Request):
    head_name, head = cams.find_linear_head(request.model)
    result = request.cam_pass(backward=False)
    if not isinstance(result.target, BoundClassTarget):
        raise ValueError("CAM explains classification models (GAP + Linear head), not segmentation outputs")

    def layer_map(name, _):
        activation = result.activations[name]
        cams.check_gap_head(name, activation, head_name, head, result.output)
        return cams.cam(activation, head, result.target.classes)
    return request.per_layer(layer_map)


def _saliency(request: Request):
    return gradients.saliency(request.input_gradient_pass().input_gradient)


def _guided_backprop(request: Request):
    return gradients.channel_sum(request.guided_pass().input_gradient)


def _guided_gradcam(request: Request):
    return _guided_backprop(request) * _gradient_cam(cams.gradcam)(request)


_DESCRIPTIONS = {
    "gradcam": "Grad-CAM: channel weights = spatial mean of gradients",
    "gradcampp": "Grad-CAM++: second/third-order gradient weights (Chattopadhay et al. eq. 19)",
    "hirescam": "HiResCAM: element-wise gradient x activation, summed over channels",
    "xgradcam": "XGrad-CAM: activation-normalised gradient weights",
    "layercam": "LayerCAM: positive gradients x activation, element-wise",
}

for _name, _formula in cams.GRADIENT_CAMS.items():
    register(MethodInfo(_name, _DESCRIPTIONS[_name], compute=_gradient_cam(_formula), layer_map_only=True))

register(MethodInfo(
    "cam", "CAM: class weights of a global-average-pool + Linear head times the layer's activations",
    compute=_class_activation_map, tasks=(CLASSIFICATION,), signed=True, cost="1 forward",
    layer_map_only=True,
))
register(MethodInfo(
    "saliency", "Saliency: |d score / d input|, max over channels",
    compute=_saliency, family="gradient", needs_layer=False, cost="1 forward + full backward",
))
register(MethodInfo(
    "guided_backprop", "Guided backpropagation: input gradient with ReLU backward gated to positive gradients",
    compute=_guided_backprop, family="gradient", needs_layer=False, signed=True, cost="1 forward + full backward",
))
register(MethodInfo(
    "guided_gradcam", "Guided Grad-CAM: guided backpropagation x upsampled Grad-CAM",
    compute=_guided_gradcam, family="gradient", signed=True, cost="2 forward + 2 backward",
))
