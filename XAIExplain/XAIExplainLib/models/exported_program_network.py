"""A ``.pt2`` file from ``torch.export.save`` loaded as a torch module (unflattened where it can be).

``torch.export`` (PyTorch 2.x; TorchScript's successor) captures a network as an
ATen graph with its weights.  The program is loaded with ``torch.export.load`` and
rebuilt with ``torch.export.unflatten``, which restores the original module
hierarchy (``features.block4`` stays ``features.block4``), so forward hooks fire
at those modules: layer methods (Grad-CAM and relatives) work with the network's
own layer names, and gradients flow through the ATen graph for the input-gradient
methods (saliency, Integrated Gradients, SmoothGrad, Input x Gradient,
GradientSHAP, occlusion, RISE).  A program that cannot be unflattened runs as the
flat graph (``ExportedProgram.module()``), which has no module calls to hook:
layer methods are then refused with the list of methods that work.

Trust: ``torch.export.load`` unpickles (weights and constants marked
``use_pickle`` are read with ``torch.load(..., weights_only=False)``, custom
objects with ``pickle.loads``), so a ``.pt2`` is code and needs ``trust=True``
(:func:`models.trust.check_exported_program`).

The graph keeps the mode the network was exported in (export it after ``net.eval()``).
Explanations run batches (occlusion and RISE perturbations, slices of a volume),
so the program's batch dimension must be dynamic (``torch.export.Dim``); a program
exported for one batch size is refused at load with how to re-export it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import ModelCardError, WeightsError, first_line
from .trust import check_exported_program


def load_exported_program(path: Path, trust: bool = False) -> tuple[nn.Module, bool]:
    """``(module, hookless)``: the program's module, unflattened where it can be.

    ``hookless`` is True when the program could not be unflattened: the flat graph takes
    no hooks at its layers, so only the input-gradient methods apply.
    """
    check_exported_program(path, trust)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - the archive reader raises many types
        raise WeightsError(f"{path}: cannot load the torch.export program ({first_line(exc)}); the "
                           "file is corrupt or truncated, or not written by torch.export.save") from exc
    if not isinstance(program, torch.export.ExportedProgram):
        raise WeightsError(f"{path}: holds a {type(program).__name__}, not a torch.export program")
    check_batch_dimension(program, path)
    try:
        return torch.export.unflatten(program).eval(), False
    except Exception:  # noqa: BLE001 - any refusal of unflatten leaves the flat graph
        flat = program.module()
        # torch makes train()/eval() raise on the flat module; the graph keeps the mode it was
        # exported in either way, so nn.Module's own (which only sets the flag) is put back.
        for name in ("train", "eval"):
            flat.__dict__.pop(name, None)
        return flat, True


def check_batch_dimension(program, path: Path) -> None:
    """One image input whose first (batch) dimension is dynamic, else a ModelCardError saying how to export."""
    signature = program.graph_signature
    inputs = [node for node in program.graph.nodes
              if node.op == "placeholder" and node.name in signature.user_inputs]
    if len(inputs) != 1:
        raise ModelCardError(f"{path}: the program takes {len(inputs)} inputs "
                             f"({', '.join(signature.user_inputs)}); XAIExplain feeds one image tensor")
    value = inputs[0].meta.get("val")
    shape = tuple(getattr(value, "shape", ()))
    if shape and isinstance(shape[0], int):
        raise ModelCardError(
            f"{path}: the program was exported for batch size {shape[0]} only (input shape "
            f"{tuple(shape)}), but explanations run batches (perturbations, slices); re-export with a "
            "dynamic batch: torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")
