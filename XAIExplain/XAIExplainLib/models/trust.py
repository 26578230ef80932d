"""What a model file may make this process do without ``trust=True``.

Model files are untrusted data.  Three things in them can run code or reach
outside the model, so each needs the caller's explicit ``trust=True``
(``--trust-model`` on the command line) and is refused with the reason
otherwise:

* an architecture named outside the allow-list below: importing a module runs
  its top-level code (``"this:Foo"`` prints a poem; a module on ``sys.path``
  could do anything), so the module name is checked *before* the import;
* TorchScript: a scripted module is a program (it can call
  ``torch.from_file(path, shared=True, ...)``, which creates or overwrites any
  file the user can write), and loading it is followed by a test forward pass;
* files a card or sidecar names outside its own folder (``../../secret.pt`` or
  an absolute path): a downloaded model folder must be self-contained.

Pickled full modules are refused in :mod:`models.loading` for the same reason.
This is the one place these rules live; the card loader and the file forms all
call it.
"""
from __future__ import annotations

from pathlib import Path

from .errors import UntrustedModelError

_PACKAGE = __name__.split(".", 1)[0]

#: Module prefixes whose ``nn.Module`` classes a card or ``architecture=`` may
#: name without trust: this package, torch's layers, and the network libraries
#: of the model families the loader supports (MONAI, nnU-Net's architectures).
ALLOWED_ARCHITECTURE_MODULES = (
    _PACKAGE,
    "torch.nn",
    "monai.networks",
    "dynamic_network_architectures",
    "nnunetv2",
)


def architecture_allowed(module_name: str) -> bool:
    """True when ``module_name`` is one of :data:`ALLOWED_ARCHITECTURE_MODULES` or inside one."""
    return any(module_name == prefix or module_name.startswith(prefix + ".")
               for prefix in ALLOWED_ARCHITECTURE_MODULES)


def check_architecture(module_name: str, trust: bool, where: str, field: str) -> None:
    """Refuse to import ``module_name`` for an architecture unless it is allowed or trusted."""
    if trust or architecture_allowed(module_name):
        return
    allowed = ", ".join(ALLOWED_ARCHITECTURE_MODULES)
    raise UntrustedModelError(
        f"{where}: {field} names module {module_name!r}, which is outside the modules a model "
        f"may use without trust ({allowed}); importing it would run its code. Load with "
        "trust=True (--trust-model) only if you trust the model's source and that module")


def check_torchscript(path: Path, trust: bool) -> None:
    """Refuse to load a TorchScript archive unless trusted: it is code that runs when called."""
    if trust:
        return
    raise UntrustedModelError(
        f"{path}: is a TorchScript archive, i.e. a program: loading it runs a test forward "
        "pass, and TorchScript can read and overwrite files (torch.from_file(..., "
        "shared=True)). Load it with trust=True (--trust-model) only if you trust where it "
        "came from, or use a state_dict/safetensors file with a named architecture")


def check_inside(path: Path, folder: Path | None, trust: bool, where: str, field: str) -> None:
    """Refuse a file outside ``folder`` (after resolving ``..`` and links) unless trusted.

    ``folder`` None means the description was built in code, not read from a
    file, so there is no folder to stay inside.
    """
    if trust or folder is None:
        return
    resolved, root = Path(path).resolve(), Path(folder).resolve()
    if resolved == root or root in resolved.parents:
        return
    raise UntrustedModelError(
        f"{where}: {field} {path} lies outside the model folder {folder}; a model's files must "
        "be inside its folder. Move the file into the folder, or load with trust=True "
        "(--trust-model) if you trust the model's source")
