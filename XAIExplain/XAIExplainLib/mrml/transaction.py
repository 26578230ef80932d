"""All-or-nothing scene changes: a cancelled or failed run leaves the scene as it was.

A run creates nodes (heatmaps, display nodes, colour tables, label maps,
segmentations) and changes existing ones (an output being updated, the slice
views' layers). :class:`SceneTransaction` remembers which nodes existed and
snapshots every existing node before it is changed; if the block raises, new
nodes are removed and snapshots are copied back, so the node count and every
node's content are as before the run.
"""
from __future__ import annotations


def _node_ids(scene) -> list:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


class SceneTransaction:
    """Context manager; call :meth:`protect` on an existing node before changing it.

    Slice view nodes (which volumes are shown, label outline) are protected
    automatically because showing an output always changes them.
    """

    def __init__(self, scene):
        self.scene = scene
        self._before: set = set()
        self._snapshots: dict = {}
        self.committed = False

    def __enter__(self):
        self._before = set(_node_ids(self.scene))
        for class_name in ("vtkMRMLSliceCompositeNode", "vtkMRMLSliceNode"):
            nodes = self.scene.GetNodesByClass(class_name)
            for i in range(nodes.GetNumberOfItems()):
                self.protect(nodes.GetItemAsObject(i))
        return self

    def protect(self, node) -> None:
        """Snapshot an existing node (and its display nodes) before it is modified.

        Nodes created inside the transaction need no protection: they are
        removed on rollback.
        """
        if node is None or node.GetID() not in self._before or node.GetID() in self._snapshots:
            return
        snapshot = node.CreateNodeInstance()
        snapshot.Copy(node)
        self._snapshots[node.GetID()] = (node, snapshot)
        get_count = getattr(node, "GetNumberOfDisplayNodes", None)
        if get_count is not None:
            for i in range(get_count()):
                self.protect(node.GetNthDisplayNode(i))

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.committed = True
            self._snapshots.clear()
            return False
        self.rollback()
        return False

    def rollback(self) -> None:
        """Remove nodes created since entering and restore every protected node."""
        for node, snapshot in self._snapshots.values():
            was_modifying = node.StartModify()
            node.Copy(snapshot)
            node.EndModify(was_modifying)
        self._snapshots.clear()
        added = [node_id for node_id in _node_ids(self.scene) if node_id not in self._before]
        for node_id in reversed(added):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)
