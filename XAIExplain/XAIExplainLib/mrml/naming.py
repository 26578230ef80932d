"""Names and identities of output nodes.

A name says what a node is (``<input> <method> <class> <layer>``) so that a
scene with many heatmaps stays readable. Identity is separate from the name:
each output carries node attributes that record the choices that made it, so
re-running with the same choices finds and updates the same node even after
the user renamed it, while different choices never overwrite each other.
"""
from __future__ import annotations

ATTRIBUTE_PREFIX = "XAIExplain."
KEY_ATTRIBUTE = ATTRIBUTE_PREFIX + "OutputKey"
KIND_ATTRIBUTE = ATTRIBUTE_PREFIX + "Kind"
INPUT_ATTRIBUTE = ATTRIBUTE_PREFIX + "InputNodeID"


def output_name(input_name: str, *parts) -> str:
    """``"<input> <part> <part> ..."``, skipping empty parts."""
    words = [str(input_name)] + [str(p) for p in parts if p not in (None, "")]
    return " ".join(words)


def output_key(input_node, kind: str, **choices) -> str:
    """A stable identity string for an output: input node, output kind and the choices."""
    items = [f"input={input_node.GetID()}", f"kind={kind}"]
    items += [f"{name}={choices[name]}" for name in sorted(choices)]
    return "|".join(items)


def tag_output(node, input_node, kind: str, key: str, **attributes) -> None:
    """Record on the node what it is and where it came from (saved with the scene)."""
    node.SetAttribute(KEY_ATTRIBUTE, key)
    node.SetAttribute(KIND_ATTRIBUTE, kind)
    node.SetAttribute(INPUT_ATTRIBUTE, input_node.GetID())
    for name, value in attributes.items():
        node.SetAttribute(ATTRIBUTE_PREFIX + name, "" if value is None else str(value))


def find_output(scene, key: str, class_name: str):
    """The output node with this key and class, or None."""
    nodes = scene.GetNodesByClass(class_name)
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(KEY_ATTRIBUTE) == key and node.GetClassName() == class_name:
            return node
    return None


def outputs_of(scene, input_node=None) -> list:
    """All XAIExplain outputs in the scene (of one input node when given)."""
    found = []
    nodes = scene.GetNodesByClass("vtkMRMLNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(KEY_ATTRIBUTE) is None:
            continue
        if input_node is None or node.GetAttribute(INPUT_ATTRIBUTE) == input_node.GetID():
            found.append(node)
    return found


def unique_name(scene, name: str, keep=None) -> str:
    """``name``, or ``name_1``, ``name_2`` ... if another node (not ``keep``) has it."""
    nodes = scene.GetNodesByName(name)
    others = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    if all(node is keep for node in others):
        return name
    return scene.GenerateUniqueName(name)
