"""Choosing the device: "auto" means CUDA when there is a GPU, and asking for a GPU that is
not there is a clear error, never a silent CPU run or an obscure failure later."""
from __future__ import annotations

import torch

ACCEPTED = "'auto', 'cpu', 'cuda' (or 'gpu'), 'cuda:N' or a torch.device"


def resolve_device(device="auto") -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; checks that a requested GPU exists."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        key = device.strip().lower()
        device_text = "cuda" if key == "gpu" else key
    elif isinstance(device, torch.device):
        device_text = str(device)
    else:
        raise TypeError(f"device must be {ACCEPTED}; got {type(device).__name__}")
    try:
        resolved = torch.device(device_text)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"device must be {ACCEPTED}; got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) available")
    elif resolved.type != "cpu":
        raise ValueError(f"device must be {ACCEPTED}; got {device!r}")
    return resolved


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator running out of memory (the one test: the engine halves
    its batch on it, the Slicer job turns it into advice)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def device_choices() -> list[tuple[str, str]]:
    """``(value, text)`` pairs for a device menu; GPU entries name the GPU and its free memory."""
    choices = [("auto", "Auto (CPU: no CUDA GPU found)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            text = (f"GPU {index}: {torch.cuda.get_device_name(index)} "
                    f"({free / 2 ** 30:.1f} of {total / 2 ** 30:.1f} GiB free)")
            choices.append(("cuda" if index == 0 else f"cuda:{index}", text))
        choices[0] = ("auto", f"Auto ({choices[2][1]})")
    return choices
