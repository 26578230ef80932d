"""Where the bridge finds its MRML scene and the Slicer module logics it needs.

Inside Slicer the scene is ``slicer.mrmlScene`` and the logics belong to the
loaded modules (``slicer.modules.colors.logic()`` ...). In plain Python with
the ``slicer-core`` wheel there is no application: :func:`create_headless_scene`
builds the same pieces (scene, application logic, default colours, volumes and
segmentations logic) so that the bridge, the logic and the tests run unchanged
from a console, a script or pytest.
"""
from __future__ import annotations

import os
import tempfile

#: Logics created here for scenes that have no Slicer application, keyed by
#: ``id(scene)``; the scene itself is kept in the value so the id stays valid.
_HEADLESS_LOGICS: dict = {}

# Node classes that a Slicer application registers from loadable modules but a
# bare vtkMRMLScene lacks.
_EXTRA_NODE_CLASSES = ("vtkMRMLColorLegendDisplayNode",)

#: Slice views of Slicer's conventional layout: view name -> orientation.
SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


def _slicer():
    import slicer

    return slicer


def get_scene(scene=None):
    """The scene to work on: the one given, else ``slicer.mrmlScene``.

    Raises a RuntimeError that says how to get a scene outside Slicer.
    """
    if scene is not None:
        return scene
    slicer = _slicer()
    current = getattr(slicer, "mrmlScene", None)
    if current is None:
        raise RuntimeError(
            "No MRML scene: run inside 3D Slicer, or create one in plain Python with "
            "XAIExplainLib.mrml.create_headless_scene()"
        )
    return current


def _module_logic(module_name: str):
    """Logic of a loaded Slicer module, or None outside the Slicer application."""
    modules = getattr(_slicer(), "modules", None)
    module = getattr(modules, module_name, None) if modules is not None else None
    return module.logic() if module is not None else None


def register_extra_node_classes(scene) -> None:
    """Register node classes that Slicer's loadable modules normally register."""
    slicer = _slicer()
    for class_name in _EXTRA_NODE_CLASSES:
        if not scene.IsNodeClassRegistered(class_name):
            scene.RegisterNodeClass(getattr(slicer, class_name)())


class HeadlessLogics:
    """The application, colour, volumes and segmentations logics of one scene."""

    def __init__(self, scene):
        slicer = _slicer()
        self.scene = scene
        self.application = slicer.vtkSlicerApplicationLogic()
        # The colour logic looks for Slicer's colour files below these folders; an
        # empty folder makes it skip them quietly instead of logging an error.
        self._share = tempfile.TemporaryDirectory(prefix="xaiexplain-share-")
        os.makedirs(os.path.join(self._share.name, "share", "ColorFiles"), exist_ok=True)
        self.application.SetHomeDirectory(self._share.name)
        self.application.SetShareDirectory("share")
        self.application.SetMRMLScene(scene)
        self.colors = slicer.vtkSlicerColorLogic()
        self.colors.SetMRMLApplicationLogic(self.application)
        self.colors.SetMRMLScene(scene)  # adds the built-in colour nodes
        self.application.SetColorLogic(self.colors)
        self.volumes = slicer.vtkSlicerVolumesLogic()
        self.volumes.SetMRMLApplicationLogic(self.application)
        self.volumes.SetMRMLScene(scene)
        self.segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations.SetMRMLApplicationLogic(self.application)
        self.segmentations.SetMRMLScene(scene)
        register_extra_node_classes(scene)
        self.slice_logics = self._create_slice_views()

    def _create_slice_views(self):
        """The three standard slice views (Red axial, Yellow sagittal, Green coronal)."""
        slicer = _slicer()
        import vtk

        logics = vtk.vtkCollection()
        for view, orientation in SLICE_VIEWS.items():
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.application)
            logic.SetMRMLScene(self.scene)
            slice_node = logic.AddSliceNode(view)
            slice_node.SetOrientation(orientation)
            logics.AddItem(logic)
        self.application.SetSliceLogics(logics)
        return logics


def create_headless_scene(set_current: bool = True):
    """Create a scene with the logics Slicer would attach to it; return the scene.

    ``set_current`` makes it ``slicer.mrmlScene``, as the Slicer application
    does, so ``slicer.util`` helpers work on it.
    """
    slicer = _slicer()
    scene = slicer.vtkMRMLScene()
    _HEADLESS_LOGICS[id(scene)] = HeadlessLogics(scene)
    _release_at_exit()
    if set_current:
        slicer.mrmlScene = scene
    return scene


_EXIT_HOOK = []


def _release_at_exit() -> None:
    """Release every headless scene still held when the interpreter exits (registered once).

    Without it a script that builds a scene, runs the logic and ends crashed in
    ``Segmentation fault``: at interpreter shutdown the VTK objects were destroyed in an
    arbitrary order, the scene after logics that still observed it. Releasing them here, in
    the order :func:`release_headless_scene` uses, while Python and VTK are whole, avoids it.
    """
    if _EXIT_HOOK:
        return
    import atexit

    atexit.register(release_all_headless_scenes)
    _EXIT_HOOK.append(True)


def release_all_headless_scenes() -> None:
    """Release every scene made by :func:`create_headless_scene` that was not released yet."""
    for logics in list(_HEADLESS_LOGICS.values()):
        release_headless_scene(logics.scene)


def release_headless_scene(scene) -> None:
    """Drop the logics of a headless scene (tests call this between cases)."""
    logics = _HEADLESS_LOGICS.pop(id(scene), None)
    if logics is not None:
        for i in range(logics.slice_logics.GetNumberOfItems()):
            logics.slice_logics.GetItemAsObject(i).SetMRMLScene(None)
        for logic in (logics.segmentations, logics.volumes, logics.colors):
            logic.SetMRMLScene(None)
        logics.application.SetMRMLScene(None)
        logics._share.cleanup()
    scene.Clear(1)
    slicer = _slicer()
    if getattr(slicer, "mrmlScene", None) is scene:
        slicer.mrmlScene = None


def _headless(scene) -> HeadlessLogics:
    logics = _HEADLESS_LOGICS.get(id(scene))
    if logics is None or logics.scene is not scene:
        logics = HeadlessLogics(scene)
        _HEADLESS_LOGICS[id(scene)] = logics
    return logics


def application_logic(scene):
    """Slicer's application logic (owns the slice views' logics)."""
    app = getattr(_slicer(), "app", None)
    if app is not None and hasattr(app, "applicationLogic"):
        return app.applicationLogic()
    return _headless(scene).application


def color_logic(scene):
    """Slicer's colour logic (loads colour files, adds colour legends)."""
    logic = _module_logic("colors")
    return logic if logic is not None else _headless(scene).colors
