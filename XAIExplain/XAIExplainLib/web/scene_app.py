"""The MRML scene and the slice views of the page: a trame-slicer application.

trame-slicer's ``SlicerApp`` builds the scene with Slicer's application, colour, volumes,
segmentations and markups logics; its remote-controlled views render each slice view with
Slicer's displayable managers on the server and stream the picture to the browser. The
scene is handed to :mod:`XAIExplainLib.mrml` (``adopt_application``), so the logic shows
heatmaps in these views exactly as in Slicer.
"""
from __future__ import annotations

import os

#: view singleton tags (Slicer's names) of the page's three slice views, in page order
SLICE_VIEWS = ("Red", "Green", "Yellow")
LAYOUT_ID = "xaiexplain"


def _offscreen_defaults() -> None:
    """Without a display, VTK's default window tries X first; EGL (Mesa) renders without one."""
    if not os.environ.get("DISPLAY") and not os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"):
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"


class SceneApp:
    """The trame-slicer application, its layout of three slice views, and their slice nodes."""

    def __init__(self, server):
        _offscreen_defaults()
        from trame_rca.encoders import RcaImageEncoder
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        from ..mrml.context import adopt_application

        self.server = server
        self.app = SlicerApp()
        self.scene = self.app.scene
        register_rca_factories(self.app.view_manager, server, rca_encoder=RcaImageEncoder.JPEG)
        self.layout_manager = LayoutManager(self.scene, self.app.view_manager, server)
        self.layout_manager.register_layout(LAYOUT_ID, Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(),
            ViewLayoutDefinition.sagittal_view()]))
        self.layout_manager.set_layout(LAYOUT_ID)
        adopt_application(self.scene, self.app.app_logic)

    def slice_views(self) -> list:
        views = {view.get_singleton_tag(): view for view in self.app.view_manager.get_slice_views()}
        return [views[tag] for tag in SLICE_VIEWS if tag in views]

    def show_volume(self, node) -> None:
        """The image in the background of every slice view, views fitted to it (no volume rendering)."""
        for view in self.slice_views():
            view.set_background_volume_id(node.GetID())
            view.set_foreground_volume_id(None)
        for view in self.slice_views():
            view.fit_view_to_content()

    def set_foreground(self, node, opacity: float) -> None:
        for view in self.slice_views():
            view.set_foreground_volume_id(node.GetID() if node is not None else None)
            view.set_foreground_opacity(opacity)

    def render(self) -> None:
        for view in self.slice_views():
            view.schedule_render()

    def place_point(self, node) -> None:
        """Slicer's place mode: the next click in a slice view adds a control point to ``node``."""
        self.app.markups_logic.place_node(node, False)
