"""Writing a small name -> value table as a ``vtkMRMLTableNode`` (Slicer shows it in a table view)."""
from __future__ import annotations


def write_table(scene, rows: dict, name: str, columns=("metric", "value"), node=None):
    """Create (or clear and refill ``node``) a two-column table from ``rows``; returns the node.

    Numbers go in a double column so Slicer sorts and plots them as numbers.
    """
    import vtk

    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    else:
        node.RemoveAllColumns()
        node.SetName(name)
    keys = vtk.vtkStringArray()
    keys.SetName(columns[0])
    values = vtk.vtkDoubleArray()
    values.SetName(columns[1])
    for key, value in rows.items():
        keys.InsertNextValue(str(key))
        values.InsertNextValue(float(value))
    table = node.GetTable()
    table.AddColumn(keys)
    table.AddColumn(values)
    node.Modified()
    return node


def read_table(node) -> dict:
    """The name -> value rows of a table written by ``write_table``."""
    table = node.GetTable()
    keys, values = table.GetColumn(0), table.GetColumn(1)
    return {keys.GetValue(i): values.GetValue(i) for i in range(table.GetNumberOfRows())}
