"""The attention matrices of a transformer, captured from the model's own modules.

Attention methods (rollout, gradient rollout, LeGrad) read each block's attention
A_b = softmax(q k^T / sqrt(d)) of shape (N, heads, L, L) and, for the class-specific ones,
the gradient of the target score with respect to it. Nothing in the model is edited:

- Which modules: a global self-attention module is one with ``num_heads`` and a ``qkv``
  projection (MONAI's ``SABlock``, timm's ``Attention`` and its look-alikes); one with a
  ``window_size`` too is windowed (Swin), which these methods refuse (see
  :func:`attention_problem`).
- How: while such a module runs (a forward pre-hook and a forward hook mark it), a
  ``TorchFunctionMode`` intercepts its ``softmax`` call, keeps the result and hands the
  model that same tensor back. MONAI's ``SABlock(save_attn=True)`` keeps only a detached
  copy (no gradient) and rewrites the module's ``att_mat``, so it is not used.
- Fused kernels compute attention without a softmax call; for the duration of the pass
  MONAI's ``use_flash_attention`` and timm's ``fused_attn`` are set to False (the same maths
  in eval mode, dropout off) and restored afterwards, as are the hooks and a ``save_attn``
  block's ``att_mat``.
- Lean gradients (as in ``engine.capture``): under frozen parameters the first captured
  attention has no graph behind it and becomes a detached leaf that requires grad; later
  blocks depend on it, so one ``autograd.grad`` gives every block's dA_b and nothing before
  the first block builds a graph.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..registry import get_method
from ..request import upsample
from ..targets import resolve_target
from ..validation import check_output_rows

_SOFTMAX = {torch.softmax, torch.Tensor.softmax, F.softmax}
_FUSED_FLAGS = ("use_flash_attention", "fused_attn")  # MONAI SABlock, timm Attention
ATTENTION_METHODS = ("attention_rollout", "gradient_rollout", "legrad")


def _is_windowed(module: nn.Module) -> bool:
    return hasattr(module, "num_heads") and hasattr(module, "window_size")


def _is_global(module: nn.Module) -> bool:
    return (hasattr(module, "num_heads") and isinstance(getattr(module, "qkv", None), nn.Module)
            and not _is_windowed(module))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's global self-attention modules (name, module), in registration order."""
    return [(name, module) for name, module in model.named_modules() if _is_global(module)]


def attention_problem(model: nn.Module) -> str | None:
    """None when the attention methods can explain ``model``, else the reason they cannot.

    Windowed attention (Swin, SwinUNETR) is refused: each block attends only inside
    shifted windows of a few tokens and patch merging changes the token set between
    stages, so there is no token-to-token matrix over the whole image to multiply across
    blocks; a rollout "over shifted windows" would be a new method with no evaluation behind it.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return "it needs hooks on the attention modules, which a TorchScript module does not allow"
    windowed = [name for name, module in model.named_modules() if _is_windowed(module)]
    if windowed:
        return (f"the model's attention is windowed (e.g. '{windowed[0]}', Swin-style): tokens attend only within "
                "shifted windows and patch merging changes the tokens between stages, so there is no "
                "whole-image attention matrix to roll out")
    if not attention_modules(model):
        return ("the model has no self-attention modules (a module with num_heads and a qkv projection, "
                "e.g. MONAI's SABlock in ViT / UNETR)")
    return None


class _SoftmaxCapture(TorchFunctionMode):
    """Keeps the softmax output computed inside the attention module that is running."""

    def __init__(self, capture: "AttentionCapture"):
        super().__init__()
        self.capture = capture

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in _SOFTMAX and self.capture.running is not None:
            result = self.capture.keep(result)
        return result


class AttentionCapture:
    """Context manager: hooks on every global attention module, fused flags off, a softmax
    interceptor; ``attentions`` holds each block's (N, heads, L, L) attention in run order.
    Everything is restored on exit, also after an exception."""

    def __init__(self, model: nn.Module, leaf: bool = False):
        self.modules = attention_modules(model)
        self.leaf = leaf
        self.attentions: list[torch.Tensor] = []
        self.names: list[str] = []
        self.running: str | None = None
        self._kept_in_call = False
        self._stack = contextlib.ExitStack()

    def keep(self, result: torch.Tensor) -> torch.Tensor:
        if self._kept_in_call:
            raise ValueError(f"attention module '{self.running}' calls softmax more than once; the attention "
                             "methods cannot tell which call is its attention")
        if result.dim() != 4 or result.shape[-1] != result.shape[-2]:
            raise ValueError(f"attention module '{self.running}' has a softmax of shape {tuple(result.shape)}, "
                             "not (N, heads, L, L)")
        if self.leaf and not result.requires_grad:
            result = result.detach().requires_grad_(True)
        self._kept_in_call = True
        self.attentions.append(result)
        self.names.append(self.running)
        return result

    def _pre(self, name):
        def hook(module, inputs):
            if name in self.names:
                raise ValueError(f"attention module '{name}' runs more than once in one forward pass (a shared "
                                 "module); the attention methods need one attention per block")
            self.running, self._kept_in_call = name, False
        return hook

    def _post(self, name):
        def hook(module, inputs, output):
            if not self._kept_in_call:
                raise ValueError(f"attention module '{name}' computed its attention without a softmax call the "
                                 "attention methods can see")
            self.running = None
        return hook

    def __enter__(self):
        try:
            for name, module in self.modules:
                for flag in _FUSED_FLAGS:
                    if getattr(module, flag, None) is True:
                        self._stack.callback(setattr, module, flag, True)
                        setattr(module, flag, False)
                if "att_mat" in module.__dict__:  # SABlock(save_attn=True) rewrites it on every forward
                    self._stack.callback(setattr, module, "att_mat", module.att_mat)
                self._stack.callback(module.register_forward_pre_hook(self._pre(name)).remove)
                self._stack.callback(module.register_forward_hook(self._post(name)).remove)
            self._stack.enter_context(_SoftmaxCapture(self))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self.running = None
        self._stack.close()


@dataclass
class AttentionPass:
    """One forward (and, for the gradient methods, one backward) with every block's attention."""

    output: torch.Tensor
    target: object
    names: list[str]
    attentions: list[torch.Tensor]  # (N, heads, L, L) per block, detached
    gradients: list[torch.Tensor] = field(default_factory=list)  # d score / d A_b, same shapes


def run_attention_pass(model: nn.Module, x: torch.Tensor, target, backward: bool) -> AttentionPass:
    """Attention (and d target score / d attention when ``backward``) of every block of ``model``
    on ``x``. Must run inside ``capture.explaining(model)`` (eval mode, frozen parameters)."""
    x = x.detach()
    context = torch.enable_grad() if backward else torch.no_grad()
    with context, AttentionCapture(model, leaf=backward) as capture:
        output = model(x)
    if not capture.attentions:
        raise ValueError("no attention was computed in the forward pass; "
                         + (attention_problem(model) or "the attention modules did not run"))
    check_output_rows(model, output, x.shape[0])
    bound = resolve_target(target, output)
    result = AttentionPass(output=output.detach(), target=bound, names=list(capture.names),
                           attentions=[a.detach() for a in capture.attentions])
    if backward:
        score = bound.score(output).sum()
        if not score.requires_grad:
            raise ValueError("the target score does not depend on the model's attention; explain another class "
                             "or region, or use a method that needs no attention (e.g. saliency)")
        grads = torch.autograd.grad(score, capture.attentions, allow_unused=True)
        result.gradients = [torch.zeros_like(a) if g is None else g.detach()
                            for a, g in zip(result.attentions, grads)]
    return result


def attention_pass(request, backward: bool, method: str) -> AttentionPass:
    """The request's attention pass, run once and shared (a backward pass serves rollout too).
    Refused, with the reason and the methods that work, where ``method`` does not apply."""
    reason = get_method(method).applicable(None, len(request.spatial_size), module=request.model)
    if reason is not None:
        raise ValueError(f"method {reason}")
    # One pass for the request: the backward one when any attention method of it needs gradients.
    backward = backward or any(get_method(name).family == "attention" and get_method(name).needs_gradients
                               for name in request.methods)
    if not backward and "attention-grad" in request._passes:
        return request._passes["attention-grad"]
    key = "attention-grad" if backward else "attention"
    return request._cached(key, lambda: run_attention_pass(request.model, request.x, request.target, backward))


def token_grid(request, length: int) -> tuple[tuple[int, ...], bool]:
    """(patch grid, has class token) for attention over ``length`` tokens of the request's input.

    The grid is the input size over the model's patch size (its patch-embedding
    convolution, or the ``token_patch_size`` option); ``length`` is the grid's size, or
    one more when a class token leads the sequence (ViT), as in ``engine.tokens``.
    """
    spatial = request.spatial_size
    patch = request.reading.tokens.patch_for(request.model, len(spatial))
    if patch is None or any(s % p for s, p in zip(spatial, patch)):
        raise ValueError(f"cannot lay {length} attention tokens on the input's grid {spatial}: the patch size "
                         f"{patch} is unknown or does not divide it; give the option token_patch_size")
    grid = tuple(s // p for s, p in zip(spatial, patch))
    cells = math.prod(grid)
    if length not in (cells, cells + 1):
        raise ValueError(f"the attention has {length} tokens but the input {spatial} with patch {patch} gives "
                         f"{cells} patches (or {cells + 1} with a class token); give the option token_patch_size")
    return grid, length == cells + 1


def relevant_tokens(request, bound, grid: tuple[int, ...], n: int) -> torch.Tensor:
    """(N, cells) weights, summing to 1 per sample (0 where nothing is relevant), of the
    output-relevant patch tokens for models without a class token.

    For a segmentation target with a voxel region (Seg-Grad-CAM), the patches holding at
    least one region voxel; otherwise every patch (a model without a class token pools
    or decodes all of them).
    """
    x = request.x
    region = getattr(bound, "region", None)
    if region is None or tuple(region.shape[1:]) != request.spatial_size:
        weights = torch.ones((n, math.prod(grid)), dtype=x.dtype, device=x.device)
    else:
        kernel = tuple(s // g for s, g in zip(request.spatial_size, grid))
        pool = F.max_pool2d if len(grid) == 2 else F.max_pool3d
        weights = pool(region.to(x.dtype).unsqueeze(1), kernel).flatten(1)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1)


def readout(request, relevance: torch.Tensor, bound, every_row: bool = False) -> torch.Tensor:
    """(N, L, L) token-to-token relevance -> (N, *S) map over the patch tokens (columns),
    laid on the patch grid and resized to the input.

    Rows read: the class token's row (ViT); without a class token (UNETR) the mean of the
    output-relevant tokens' rows (:func:`relevant_tokens`); ``every_row``: the mean of all
    rows, class token included (LeGrad's reading). A class token's column is dropped.
    """
    n, length = relevance.shape[0], relevance.shape[-1]
    grid, has_class = token_grid(request, length)
    if every_row:
        tokens = relevance.mean(dim=1)
    elif has_class:
        tokens = relevance[:, 0]
    else:
        tokens = torch.einsum("nq,nqk->nk", relevant_tokens(request, bound, grid, n), relevance)
    if has_class:
        tokens = tokens[:, 1:]
    return upsample(tokens.reshape((n,) + grid), request.spatial_size)
