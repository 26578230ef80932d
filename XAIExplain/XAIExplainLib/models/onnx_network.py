"""An ONNX graph read as data, checked against the trust rules, and converted to torch modules.

ONNX is how TensorFlow/Keras and many clinical models travel.  The graph is
converted by onnx2torch (Kalgin et al., *onnx2torch*, ENOT-AutoDL, 2021), which
builds a ``torch.fx.GraphModule`` with one submodule per ONNX node, named after
the node (``features/block4/conv2/Conv``): the converted network is eager
PyTorch, so hooks, Grad-CAM and every input-gradient method work on it, and a
layer is named by its ONNX node.

ONNX is data: a protobuf of operators from the ONNX standard and tensors, so
loading one runs no code from the file and needs no trust.  Two exceptions, both
checked before anything is converted (:func:`models.trust.check_onnx_model`):
custom operator domains (implemented by code outside the file) need trust, and
external tensor data must lie inside the file's folder (:func:`models.trust.check_inside`).
Operators onnx2torch cannot convert are refused by name before conversion.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

from torch import nn

from .errors import ModelCardError, WeightsError

#: Operators whose onnx2torch converters call torchvision, which the project never imports
#: (detection post-processing, not found in the classifiers and segmenters explained here).
TORCHVISION_OPERATORS = ("NonMaxSuppression", "RoiAlign")


def read_onnx(path: Path, trust: bool = False):
    """The ``onnx.ModelProto`` in ``path``, checked against the trust rules, external data loaded."""
    onnx = _import("onnx")
    from onnx.external_data_helper import load_external_data_for_model

    from .trust import check_onnx_model

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise WeightsError(f"{path}: is not a readable ONNX model ({type(exc).__name__}: {exc}); "
                           "export it with torch.onnx.export or tf2onnx") from exc
    check_onnx_model(path, custom_domains(model), external_data_files(model), trust)
    try:
        load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read its external tensor data ({exc}); keep the data "
                           "files beside the .onnx file as exported") from exc
    return model


def external_data_files(model) -> list[str]:
    """The ``location`` of every tensor the model stores outside the .onnx file."""
    from onnx import TensorProto

    tensors = list(model.graph.initializer)
    for node in _all_nodes(model.graph):
        for attribute in node.attribute:
            tensors.extend(attribute.tensors)
            if attribute.HasField("t"):
                tensors.append(attribute.t)
    for graph in _subgraphs(model.graph):
        tensors.extend(graph.initializer)
    files = []
    for tensor in tensors:
        if tensor.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location not in files:
                files.append(location)
    return files


def custom_domains(model) -> list[str]:
    """Operator domains outside the ONNX standard (``""``/``ai.onnx``/``ai.onnx.ml``) the graph uses."""
    standard = ("", "ai.onnx", "ai.onnx.ml")
    used = {node.domain for node in _all_nodes(model.graph)}
    used |= {function.domain for function in model.functions}
    return sorted(d for d in used if d not in standard)


def unsupported_operators(model) -> list[str]:
    """``Op (domain, opset N)`` for every node type onnx2torch has no converter for."""
    registry = _onnx2torch().node_converters.registry
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    missing = []
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        label = f"{node.op_type} ({domain or 'ai.onnx'}, opset {opsets.get(domain, '?')})"
        if label in missing:
            continue
        if node.op_type in TORCHVISION_OPERATORS:
            missing.append(label)
            continue
        try:
            registry.get_converter(operation_type=node.op_type, version=opsets.get(domain, 1),
                                   domain=domain)
        except NotImplementedError:
            missing.append(label)
    return missing


def convert_onnx(path: Path, trust: bool = False) -> nn.Module:
    """The torch module onnx2torch builds from the ONNX file ``path`` (eval mode)."""
    model = read_onnx(path, trust)
    _inline_initializer_copies(model)
    missing = unsupported_operators(model)
    if missing:
        raise ModelCardError(f"{path}: uses operators that cannot be converted to PyTorch: "
                             f"{', '.join(missing)}; re-export the model with opset 17 or older "
                             "(torch.onnx.export(..., opset_version=17)) or without these operators")
    try:
        module = _onnx2torch().convert(model)
    except Exception as exc:  # noqa: BLE001 - the converter fails with many types on odd graphs
        raise ModelCardError(f"{path}: onnx2torch could not convert the graph "
                             f"({type(exc).__name__}: {exc})") from exc
    return module.eval()


def _inline_initializer_copies(model) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer under the output's name.

    torch.onnx.export shares equal constants (the zero biases of folded batch norms)
    through Identity nodes; onnx2torch needs a convolution's weights and bias to be
    initializers, so each such copy becomes one (the graph computes the same).
    """
    from onnx import TensorProto

    initializers = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") \
                and len(node.input) == 1 and node.input[0] in initializers:
            copy = TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _all_nodes(graph):
    """Nodes of ``graph`` and of the subgraphs (If/Loop/Scan bodies) inside it."""
    for node in graph.node:
        yield node
    for sub in _subgraphs(graph):
        yield from sub.node


def _subgraphs(graph):
    """Every subgraph (If/Loop/Scan bodies) inside ``graph``, nested ones included."""
    for node in graph.node:
        for attribute in node.attribute:
            found = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
            for sub in found:
                yield sub
                yield from _subgraphs(sub)


def _import(name: str):
    try:
        return __import__(name)
    except ImportError as exc:
        raise ImportError(f"loading an ONNX file needs {name}: pip install 'xaiexplain[onnx]' "
                          f"({exc})") from exc


def _onnx2torch():
    """onnx2torch, imported without torchvision.

    onnx2torch imports torchvision at import time for two detection operators
    (:data:`TORCHVISION_OPERATORS`, refused by :func:`unsupported_operators`); the
    project never imports torchvision (its CPU wheels do not load against the pinned
    torch).  A module object stands in for it during the import only, with the three
    functions those converters name raising if ever called; it is removed afterwards.
    """
    if "onnx2torch" in sys.modules or "torchvision" in sys.modules:
        return _import("onnx2torch")
    package, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    package.ops = ops

    def refused(*args, **kwargs):
        raise RuntimeError(f"{', '.join(TORCHVISION_OPERATORS)} need torchvision, which XAIExplain "
                           "does not load")

    ops.nms = ops.box_convert = ops.roi_align = refused
    sys.modules.update({"torchvision": package, "torchvision.ops": ops})
    try:
        module = _import("onnx2torch")
        import onnx2torch.node_converters.registry  # noqa: F401 - unsupported_operators reads it
    finally:
        sys.modules.pop("torchvision", None)
        sys.modules.pop("torchvision.ops", None)
    return module
