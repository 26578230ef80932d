"""Colour tables for heatmaps and colours for segments.

Heatmaps use Inferno (sequential, perceptually uniform, readable over a grey
CT) and signed maps a diverging cold-black-hot table. Slicer's foreground
layer ignores a colour table's alpha (only the threshold and the layer
opacity make voxels see-through), so the signed table is black at zero:
blended over the CT, near-zero attribution dims the anatomy instead of
washing it out. Slicer ships Inferno as a colour file; the ``slicer-core`` wheel and
older Slicer versions do not, so both tables are shipped in
``XAIExplain/Resources/ColorTables`` and added to the scene only when the scene
lacks a colour node of that name.
"""
from __future__ import annotations

from pathlib import Path

from ..resources import resources_dir

HEAT_TABLE = "Inferno"
SIGNED_TABLE = "XAIExplainDiverging"

#: Folder of the colour files shipped with the module (XAIExplain/Resources/ColorTables).
COLOR_TABLE_DIR = resources_dir() / "ColorTables"

# Distinct colours for segments whose model card gives none (Slicer-like hues).
_FALLBACK_PALETTE = (
    (0.50, 0.68, 0.50), (0.95, 0.84, 0.57), (0.69, 0.48, 0.39), (0.44, 0.71, 0.82),
    (0.85, 0.40, 0.35), (0.56, 0.41, 0.71), (0.98, 0.60, 0.20), (0.30, 0.55, 0.85),
)


def read_color_table_file(path) -> list:
    """Entries ``(index, name, r, g, b, a)`` of a Slicer colour table text file.

    Format: ``#`` comment lines, then one ``index name R G B A`` line per
    colour with 0..255 components (A optional, default 255). Returned
    components are floats in 0..1.
    """
    path = Path(path)
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (5, 6):
            raise ValueError(f"{path.name}:{number}: expected 'index name R G B [A]', got {line!r}")
        try:
            index = int(fields[0])
            values = [int(v) for v in fields[2:]] + ([255] if len(fields) == 5 else [])
        except ValueError as error:
            raise ValueError(f"{path.name}:{number}: non-integer colour field in {line!r}") from error
        if index < 0 or any(v < 0 or v > 255 for v in values):
            raise ValueError(f"{path.name}:{number}: index must be >= 0 and components 0..255")
        entries.append((index, fields[1], *(v / 255.0 for v in values)))
    if not entries:
        raise ValueError(f"{path.name}: no colour entries")
    return entries


def find_color_node(scene, name: str):
    """First colour node called ``name`` in the scene, or None."""
    collection = scene.GetNodesByClassByName("vtkMRMLColorNode", name)
    node = collection.GetItemAsObject(0) if collection.GetNumberOfItems() else None
    return node


def ensure_color_table(scene, name: str, folder=None):
    """The scene's colour node ``name``; added from ``<folder>/<name>.txt`` if missing.

    The added node is saved with the scene, so a saved scene reopens with
    the same colours even on a Slicer without the file.
    """
    existing = find_color_node(scene, name)
    if existing is not None:
        return existing
    import slicer

    path = Path(folder or COLOR_TABLE_DIR) / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"Colour table '{name}' is not in the scene and its file {path.name} "
                                f"is missing from the module's Resources/ColorTables folder")
    entries = read_color_table_file(path)
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToUser()
    node.SetNumberOfColors(max(entry[0] for entry in entries) + 1)
    for index, entry_name, r, g, b, a in entries:
        node.SetColor(index, entry_name, r, g, b, a)
    node.SetName(name)
    node.SetAttribute("Category", "XAIExplain")
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def heat_color_node(scene, signed: bool = False):
    """Inferno for maps in [0, 1]; the diverging table for signed maps."""
    return ensure_color_table(scene, SIGNED_TABLE if signed else HEAT_TABLE)


def parse_color(value) -> tuple:
    """(r, g, b) floats in 0..1 from ``'#rrggbb'``, 0..255 or 0..1 triplets.

    Model cards write colours in all three forms.
    """
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) != 6:
            raise ValueError(f"colour {value!r} is not '#rrggbb'")
        try:
            return tuple(int(text[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
        except ValueError as error:
            raise ValueError(f"colour {value!r} is not '#rrggbb'") from error
    try:
        components = [float(v) for v in value]
    except TypeError as error:
        raise TypeError(f"colour must be '#rrggbb' or an (r, g, b) sequence, got {value!r}") from error
    if len(components) not in (3, 4):
        raise ValueError(f"colour {value!r} must have 3 components (r, g, b)")
    components = components[:3]
    if any(c < 0 for c in components) or any(c > 255 for c in components):
        raise ValueError(f"colour {value!r} has components outside 0..255")
    if any(c > 1 for c in components):
        components = [c / 255.0 for c in components]
    return tuple(components)


def fallback_color(index: int) -> tuple:
    """A distinct colour for the index-th segment when the card gives none."""
    return _FALLBACK_PALETTE[index % len(_FALLBACK_PALETTE)]
