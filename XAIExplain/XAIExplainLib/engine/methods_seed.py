"""Registration of the seed-paper methods (SAM, CRM, KWC) and the perturbation / path methods.

Options are passed as keywords of ``xai.explain``; each method lists the ones it takes
so that a misspelt option is an error, not silently ignored.
"""
from __future__ import annotations

from . import crm, kwc, paths, perturbation, sam
from .registry import CLASSIFICATION, SEGMENTATION, MethodInfo, register

register(MethodInfo(
    "scorecam", "Score-CAM: channel weights = target score of the input masked by each upsampled channel",
    compute=perturbation.scorecam, family="perturbation", cost="1 forward + K masked forwards (batched)",
))
register(MethodInfo(
    "occlusion", "Occlusion: drop of the target score when a window is set to the baseline, averaged per voxel",
    compute=perturbation.occlusion, family="perturbation", needs_layer=False, signed=True,
    cost="1 forward per window (batched)", options=("window", "stride", "baseline"),
))
register(MethodInfo(
    "smoothgrad", "SmoothGrad: mean saliency over seeded noisy copies of the input",
    compute=paths.smoothgrad, family="gradient", needs_layer=False,
    cost="samples x (forward + full backward), batched", options=("samples", "noise", "seed"),
))
register(MethodInfo(
    "integrated_gradients", "Integrated Gradients: (x - baseline) x path-averaged gradient (Gauss-Legendre)",
    compute=paths.integrated_gradients, family="gradient", needs_layer=False, signed=True,
    cost="steps x (forward + full backward), batched", options=("steps", "baseline"),
))
register(MethodInfo(
    "sam", "SAM (our reading of Philbrick et al. 2018): input saliency of a layer's response (or its Grad-CAM)",
    compute=sam.compute, family="gradient", cost="1 forward to the layer + 1 backward to the input",
    options=("sam_mode",),
))
register(MethodInfo(
    "crm", "CRM: squared change of every class score when one location of the last conv map is removed",
    compute=crm.compute, family="relevance", tasks=(CLASSIFICATION,), cost="1 forward (head re-run in forward mode)",
    options=("crm_mode", "crm_classes"),
))
register(MethodInfo(
    "kwc", "KWC: kernels weighted by the prediction they carry alone and lose when removed (Mullan & Sonka)",
    compute=kwc.compute, family="relevance", tasks=(SEGMENTATION,),
    cost="2K suffix forwards per layer (batched, prefix reused)", options=("kwc_empty", "seed"),
))
