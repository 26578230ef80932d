"""Every import inside XAIExplainLib follows the dependency direction of DESIGN.md section 1.

engine <- evaluation <- models <- logic, cli <- web; imaging and mrml are leaves; nothing in the
library imports logic, cli or web; no module imports the package's own top level. Function-level
(lazy) imports count too: they are dependencies all the same.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "XAIExplain" / "XAIExplainLib"

# which top-level parts of the package each part may import (besides itself)
ALLOWED = {
    "engine": set(),
    "evaluation": {"engine"},
    "imaging": set(),
    "mrml": {"resources", "imaging"},  # the two leaves: mrml reuses imaging's SimpleITK helpers
    "models": {"engine", "evaluation", "imaging", "resources"},
    "logic": {"engine", "evaluation", "models", "imaging", "mrml", "resources"},
    "cli": {"engine", "evaluation", "models", "imaging", "resources"},
    "web": {"logic", "cli", "models", "mrml"},  # the web face: nothing imports it
    "resources": set(),
}
# third-party libraries the torch-only engine never imports
NOT_IN_ENGINE = {"SimpleITK", "vtk", "slicer", "monai", "nnunetv2", "dask", "distributed", "mrml"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(absolute module name, line) of every import in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if node.module is None or (module == "XAIExplainLib" and node.level):
                for alias in node.names:  # "from . import x": x may be a submodule
                    yield f"{module}.{alias.name}", node.lineno
            else:
                yield module, node.lineno


def _part(module: str) -> str | None:
    parts = module.split(".")
    if module == "XAIExplainLib.__version__":  # a constant of the top level, not its API
        return None
    return parts[1] if parts[0] == "XAIExplainLib" and len(parts) > 1 else None


FILES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_there_are_files_to_check():
    assert len(FILES) > 50 and all(_part(_module_name(p)) for p in FILES if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_dependency_direction(path):
    own = _part(_module_name(path))
    if own is None:  # the package's own __init__ re-exports the public API
        return
    wrong = []
    for module, line in _imports(path):
        if module == "XAIExplainLib":
            wrong.append(f"line {line}: imports the package's top level; import from where it lives")
            continue
        part = _part(module)
        if part is not None and part != own and part not in ALLOWED[own]:
            wrong.append(f"line {line}: {own} imports {module}")
        if own == "engine" and module.split(".")[0] in NOT_IN_ENGINE:
            wrong.append(f"line {line}: the torch-only engine imports {module}")
    assert not wrong, f"{path.relative_to(PACKAGE)}: " + "; ".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The test is able to fail: an engine module importing models, and one importing the top level."""
    fake = PACKAGE / "engine" / "_probe_for_test.py"
    assert not fake.exists()
    try:
        fake.write_text("from ..models import load_model\nimport XAIExplainLib as xai\nimport SimpleITK\n", encoding="utf-8")
        found = [m for m, _ in _imports(fake)]
        assert found == ["XAIExplainLib.models", "XAIExplainLib", "SimpleITK"]
        with pytest.raises(AssertionError, match="engine imports XAIExplainLib.models.*package's top level.*"
                                                 "torch-only engine imports SimpleITK"):
            test_imports_follow_the_dependency_direction(fake)
    finally:
        fake.unlink()
