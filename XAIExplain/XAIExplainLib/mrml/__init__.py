"""XAIExplainLib.mrml: the bridge between a Slicer (MRML) scene and the engine.

Pull scalar volumes as numpy arrays / SimpleITK images with exact geometry,
push maps back as colour-mapped volumes, label maps and segmentations, show
them in the slice views, undo everything on cancel, render views to PNG.
Slicer (or the ``slicer-core`` wheel) is imported only when a function needs
it, so importing this package never requires Slicer.
"""
from .colors import HEAT_TABLE, SIGNED_TABLE, ensure_color_table, heat_color_node, parse_color
from .context import create_headless_scene, get_scene, release_headless_scene
from .display import (DEFAULT_DISPLAY_THRESHOLD, DEFAULT_OPACITY, add_color_legend, configure_heatmap_display,
                      set_heatmap_opacity, show_in_slice_views)
from .geometry import GridGeometry, geometry_from_ijk_to_ras, ijk_to_ras_from_geometry, ijk_to_ras_from_sitk
from .labels import class_entries, segment_mask, threshold_map, write_labelmap, write_segmentation
from .naming import find_output, output_key, output_name, outputs_of
from .render import color_bar, ras_to_pixel, render_montage, render_slice, save_png
from .transaction import SceneTransaction
from .volumes import (array_on_node_grid, check_scalar_volume, node_ijk_to_ras, sitk_to_volume, volume_array,
                      volume_to_sitk, write_volume)

__all__ = [
    "DEFAULT_DISPLAY_THRESHOLD", "DEFAULT_OPACITY", "GridGeometry", "HEAT_TABLE", "SIGNED_TABLE",
    "SceneTransaction", "add_color_legend", "array_on_node_grid", "check_scalar_volume", "class_entries",
    "configure_heatmap_display", "create_headless_scene", "ensure_color_table", "find_output",
    "geometry_from_ijk_to_ras", "get_scene", "heat_color_node", "ijk_to_ras_from_geometry",
    "ijk_to_ras_from_sitk", "node_ijk_to_ras", "output_key", "output_name", "outputs_of", "parse_color",
    "color_bar", "ras_to_pixel", "release_headless_scene", "render_montage", "render_slice", "save_png", "segment_mask",
    "set_heatmap_opacity", "show_in_slice_views", "sitk_to_volume", "threshold_map", "volume_array", "volume_to_sitk",
    "write_labelmap", "write_segmentation", "write_volume",
]
