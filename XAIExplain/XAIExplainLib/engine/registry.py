"""The catalogue of methods: what each needs, what it costs, which options it takes, and
whether it applies to a given model (the one rule every caller asks)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class MethodInfo:
    """One registered method.

    ``label`` is its display name ("Grad-CAM"): by default the part of the description
    before ':'. ``needs_gradients``: it differentiates the model (False for CAM, Eigen-CAM,
    pure perturbation methods; the engine skips the backward when no method of a request
    needs layer gradients). ``needs_hooks``: it hooks or intercepts the network's layers
    (forward hooks, activation swaps, layer replay), which TorchScript modules do not allow;
    by default every layer method needs them. ``needs_output``: it reads the model's output
    (its target's score); False for Eigen-CAM, whose forward (under inference mode, no graph)
    may stop once its layers ran and needs no frozen parameters. ``needs_gap_head``: its layer
    must feed a global average pool and the Linear head (CAM, CRM); callers that choose a
    layer for the user pick the model's GAP-fed layer for it, not the card's default.
    """

    name: str
    description: str
    compute: Callable = None
    family: str = "cam"
    tasks: tuple = (CLASSIFICATION, SEGMENTATION)
    spatial_dims: tuple = (2, 3)
    needs_layer: bool = True
    signed: bool = False
    cost: str = "1 forward + 1 backward"
    options: tuple = ()
    #: The map is one layer's map resized to the input and nothing more, so a caller that
    #: explains a volume batch by batch may keep it at layer resolution and resize once.
    layer_map_only: bool = False
    label: str = ""
    needs_gradients: bool = True
    needs_hooks: bool | None = None
    needs_output: bool = True
    needs_gap_head: bool = False
    #: ``model_check(module) -> reason or None``: whether the method applies to this network
    #: (the attention methods: only models with global self-attention modules).
    model_check: Callable | None = None

    def __post_init__(self):
        if not self.label:
            head = self.description.split(":", 1)[0].strip() if ":" in self.description else ""
            object.__setattr__(self, "label", head or self.name)
        if self.needs_hooks is None:
            object.__setattr__(self, "needs_hooks", self.needs_layer)

    def summary(self) -> str:
        layer = "layer" if self.needs_layer else "no layer"
        return f"{self.name}: {self.description} [{', '.join(self.tasks)}; {layer}; {self.cost}]"

    def applicable(self, task: str | None = None, spatial_dims: int | None = None,
                   scripted: bool = False, module=None) -> str | None:
        """None when the method can explain such a model, else the reason it cannot.

        ``task`` ("classification" / "segmentation") and ``spatial_dims`` (2 / 3) may be
        None when unknown (a plain module before its first forward); ``scripted``: the model
        is TorchScript, which takes no hooks; ``module``: the network itself, for methods
        with a ``model_check`` (None: not known, not checked).
        """
        if task is not None and task not in self.tasks:
            return f"'{self.name}' explains {' and '.join(self.tasks)} models, not {task} models"
        if spatial_dims is not None and spatial_dims not in self.spatial_dims:
            return f"'{self.name}' does not support {spatial_dims}D models"
        if scripted and self.needs_hooks:
            return (f"'{self.name}' needs hooks on the network's layers, which a TorchScript module does not allow; "
                    f"methods that work on TorchScript: {', '.join(scripted_methods())}")
        if module is not None and self.model_check is not None:
            reason = self.model_check(module)
            if reason is not None:
                working = [name for name, info in METHODS.items()
                           if info.model_check is None and info.applicable(task, spatial_dims, scripted) is None]
                return f"'{self.name}' does not apply: {reason}; methods that work on this model: {', '.join(working)}"
        return None


METHODS: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    if info.name in METHODS:
        raise ValueError(f"method '{info.name}' is registered twice")
    METHODS[info.name] = info
    return info


class MethodChoiceError(ValueError):
    """A method list that cannot run: empty, an unknown name, or a name given twice.

    ``method`` is the offending name (None for an empty list), for callers that point at
    the argument that held it (the CLI's ``--method NAME``)."""

    def __init__(self, message: str, method: str | None = None):
        super().__init__(message)
        self.method = method


def get_method(name) -> MethodInfo:
    if not isinstance(name, str):
        raise TypeError(f"a method is given by name (str), got {type(name).__name__}")
    if name not in METHODS:
        raise MethodChoiceError(f"unknown method '{name}'; available methods: {', '.join(sorted(METHODS))}", name)
    return METHODS[name]


def check_methods(methods) -> list[str]:
    """The one check of a method choice: a name or a non-empty list of known names, each once.

    Returns the names as a list in the given order. A name given twice is refused (not
    dropped): two requests for one map are a mistake in the caller's list, and the one
    policy for the CLI, the logic, the pipeline and the engine.
    """
    if isinstance(methods, str):
        methods = [methods]
    chosen = list(methods or ())
    if not chosen:
        raise MethodChoiceError("no method given: give a method name or a non-empty list of names; "
                                f"available methods: {', '.join(sorted(METHODS))}")
    seen = set()
    for name in chosen:
        get_method(name)
        if name in seen:
            raise MethodChoiceError(f"method '{name}' is asked for twice; give each method once", name)
        seen.add(name)
    return chosen


def scripted_methods() -> list[str]:
    """The methods that work on a TorchScript module (no hooks on its layers)."""
    return [name for name, info in METHODS.items() if not info.needs_hooks]


def check_applicable(methods, task: str | None = None, spatial_dims: int | None = None,
                     scripted: bool = False, model_name: str = "this model", module=None) -> None:
    """ValueError naming the first method that cannot explain such a model, and why."""
    for name in methods:
        reason = get_method(name).applicable(task, spatial_dims, scripted, module)
        if reason is not None:
            raise ValueError(f"method {reason} ({model_name})")
