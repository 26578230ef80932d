"""Reading and checking method options (``steps``, ``window``, ``baseline``, ...).

Options arrive as keywords of ``xai.explain``; the registry has already refused unknown
names. These helpers check values and turn mistakes into errors that say what was
given and what is accepted, before any forward pass runs.
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Sequence

import numpy as np
import torch


def positive_int(options: dict, name: str, default: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"option {name} must be a positive int, got {value!r}")
    return int(value)


def integer(options: dict, name: str, default: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"option {name} must be an int, got {value!r}")
    return int(value)


def non_negative_float(options: dict, name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"option {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def choice(options: dict, name: str, default: str, accepted: Sequence[str]) -> str:
    value = options.get(name, default)
    if value not in accepted:
        raise ValueError(f"option {name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def spatial_sizes(options: dict, name: str, default: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """A positive int (the same on every spatial axis) or one positive int per spatial axis."""
    value = options.get(name, default)
    sizes = (value,) * len(spatial) if isinstance(value, Integral) and not isinstance(value, bool) else value
    if (not isinstance(sizes, (tuple, list)) or len(sizes) != len(spatial)
            or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in sizes)):
        raise ValueError(
            f"option {name} must be a positive int or {len(spatial)} positive ints (one per spatial axis of "
            f"an input with spatial shape {spatial}), got {value!r}"
        )
    return tuple(int(s) for s in sizes)


def baseline(options: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """The ``baseline`` option as a tensor of x's shape: a number, or a tensor broadcastable to x.

    Accepted tensor shapes: (C, *S), (1, C, *S), (N, C, *S), or anything else that
    broadcasts to x (a per-channel value (1, C, 1, 1), ...).
    """
    value = options.get(name, 0.0)
    if isinstance(value, Real) and not isinstance(value, bool):
        return torch.full_like(x, float(value))
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.dtype in
                                                   (torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"option {name} must be a number or a numeric tensor broadcastable to x "
                        f"{tuple(x.shape)}, got {type(value).__name__}")
    value = value.to(device=x.device, dtype=x.dtype)
    if value.dim() == x.dim() - 1:
        value = value.unsqueeze(0)
    try:
        return torch.broadcast_to(value, x.shape).clone()
    except RuntimeError:
        raise ValueError(f"option {name} has shape {tuple(value.shape)}, which does not broadcast to x "
                         f"{tuple(x.shape)}; give a number, (C, *S), (1, C, *S) or (N, C, *S)") from None
