"""The catalogue of methods: what each needs, what it costs, which options it takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class MethodInfo:
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

    def summary(self) -> str:
        layer = "layer" if self.needs_layer else "no layer"
        return f"{self.name}: {self.description} [{', '.join(self.tasks)}; {layer}; {self.cost}]"


METHODS: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    if info.name in METHODS:
        raise ValueError(f"method '{info.name}' is registered twice")
    METHODS[info.name] = info
    return info


def get_method(name) -> MethodInfo:
    if not isinstance(name, str):
        raise TypeError(f"a method is given by name (str), got {type(name).__name__}")
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; available methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
