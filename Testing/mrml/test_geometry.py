"""MRML bridge geometry: pull and push keep every voxel where it is, on any grid."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import (GRIDS, SHARED_DATA, add_volume, box_volume, ijk_to_ras, rotation, scene,  # noqa: F401
                          voxel_ras)

import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.imaging.orientation import slice_axis_for_orientation  # noqa: E402
from XAIExplainLib.mrml import geometry  # noqa: E402


def _lps_point(image, ijk):
    return np.array(image.TransformIndexToPhysicalPoint([int(v) for v in ijk]))


@pytest.mark.parametrize("grid", GRIDS)
def test_matrix_splits_and_recomposes_exactly(grid):
    matrix = GRIDS[grid]
    parts = geometry.geometry_from_ijk_to_ras(matrix)
    np.testing.assert_allclose(geometry.ijk_to_ras_from_geometry(parts.origin, parts.spacing, parts.direction),
                               matrix, atol=1e-12)
    # RAS <-> LPS is a rotation (det +1): a flipped grid stays flipped
    assert np.linalg.det(parts.direction) == pytest.approx(np.sign(np.linalg.det(matrix[:3, :3])))


def test_degenerate_matrix_is_rejected():
    matrix = np.eye(4)
    matrix[:, 1] = 0.0
    with pytest.raises(ValueError, match="degenerate"):
        geometry.geometry_from_ijk_to_ras(matrix)


@pytest.mark.parametrize("grid", GRIDS)
def test_pulled_image_has_the_nodes_voxels_at_the_same_physical_points(scene, grid):
    array = box_volume()
    node = add_volume(array, GRIDS[grid])
    image = mrml.volume_to_sitk(node)
    assert image.GetSize() == tuple(reversed(array.shape))
    assert image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)
    for zyx in [(0, 0, 0), (11, 19, 23), (5, 7, 15), (3, 12, 2)]:
        lps = _lps_point(image, zyx[::-1])
        np.testing.assert_allclose(lps * [-1, -1, 1], voxel_ras(node, zyx), atol=1e-9)


@pytest.mark.parametrize("grid", GRIDS)
def test_pull_leaves_the_node_untouched(scene, grid):
    array = box_volume()
    node = add_volume(array, GRIDS[grid])
    matrix_before = mrml.node_ijk_to_ras(node)
    image_mtime = node.GetImageData().GetMTime()
    pulled = mrml.volume_array(node)
    pulled[:] = 0  # writing into the pulled copy must not reach the node
    mrml.volume_to_sitk(node)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(node), matrix_before)
    assert node.GetImageData().GetMTime() == image_mtime


@pytest.mark.parametrize("grid", GRIDS)
def test_pushed_map_copies_the_grid_bit_for_bit(scene, grid):
    node = add_volume(box_volume(), GRIDS[grid])
    values = np.random.default_rng(0).random(box_volume().shape).astype(np.float32)
    out = mrml.write_volume(scene, values, node, "map")
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(out), mrml.node_ijk_to_ras(node))
    assert out.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
    assert out.GetOrigin() == node.GetOrigin()
    assert out.GetSpacing() == node.GetSpacing()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(out), values)


def test_pushed_map_follows_the_inputs_parent_transform(scene):
    node = add_volume(box_volume())
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    out = mrml.write_volume(scene, np.zeros(box_volume().shape, np.float32), node, "map")
    assert out.GetTransformNodeID() == transform.GetID()


@pytest.mark.parametrize("grid", GRIDS)
def test_map_from_an_image_on_the_input_grid_is_accepted_and_a_shifted_one_refused(scene, grid):
    node = add_volume(box_volume(), GRIDS[grid])
    image = sitk.Cast(mrml.volume_to_sitk(node), sitk.sitkFloat32)
    np.testing.assert_array_equal(mrml.array_on_node_grid(image, node), sitk.GetArrayFromImage(image))
    shifted = sitk.Image(image)
    shifted.SetOrigin(tuple(np.array(image.GetOrigin()) + 0.5 * np.array(image.GetSpacing())))
    with pytest.raises(ValueError, match="not on the input volume's grid"):
        mrml.array_on_node_grid(shifted, node)
    with pytest.raises(ValueError, match="shape"):
        mrml.array_on_node_grid(np.zeros((3, 4, 5), np.float32), node)


def test_single_slice_volume_round_trips(scene):
    array = box_volume(shape=(1, 20, 24), box=((0, 1), (6, 12), (14, 20)))
    node = add_volume(array, GRIDS["oblique"])
    image = mrml.volume_to_sitk(node)
    assert image.GetSize() == (24, 20, 1)
    out = mrml.write_volume(scene, sitk.GetArrayFromImage(image).astype(np.float32), node, "map")
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(out), mrml.node_ijk_to_ras(node))
    np.testing.assert_array_equal(mrml.array_on_node_grid(image, node), array)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_any_scalar_type_is_pulled_unchanged(scene, dtype):
    array = (np.arange(2 * 3 * 4) % 7).reshape(2, 3, 4).astype(dtype)
    node = add_volume(array)
    pulled = mrml.volume_array(node)
    assert pulled.dtype == dtype
    np.testing.assert_array_equal(pulled, array)


def test_vector_volume_is_refused_with_a_clear_message(scene):
    rgb = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4, 3), np.uint8), nodeClassName="vtkMRMLVectorVolumeNode")
    with pytest.raises(TypeError, match="vector, RGB, tensor and 4D"):
        mrml.check_scalar_volume(rgb)


def test_multi_component_scalar_node_is_refused(scene):
    import vtk

    image = vtk.vtkImageData()
    image.SetDimensions(4, 3, 2)
    image.AllocateScalars(vtk.VTK_FLOAT, 5)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "4D")
    node.SetAndObserveImageData(image)
    with pytest.raises(TypeError, match="5 value"):
        mrml.volume_array(node)


def test_non_volume_and_empty_inputs_are_refused(scene):
    with pytest.raises(ValueError, match="No input volume"):
        mrml.check_scalar_volume(None)
    with pytest.raises(TypeError, match="scalar volume node"):
        mrml.check_scalar_volume(scene.AddNewNodeByClass("vtkMRMLModelNode"))
    with pytest.raises(TypeError, match="scalar volume node"):
        mrml.check_scalar_volume(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="no voxel data"):
        mrml.check_scalar_volume(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"))


@pytest.mark.parametrize("orientation, matrix, expected", [
    ("axial", np.eye(4), 0), ("coronal", np.eye(4), 1), ("sagittal", np.eye(4), 2),
    # sagittally acquired: k runs along R, j along S, i along A
    ("sagittal", ijk_to_ras(directions=np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)), 0),
    ("axial", ijk_to_ras(directions=np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)), 1),
    ("axial", ijk_to_ras(directions=rotation("x", 25.0)), 0),
])
def test_orientation_picks_the_voxel_axis_closest_to_its_normal(orientation, matrix, expected):
    assert slice_axis_for_orientation(matrix, orientation) == expected


def test_unknown_orientation_is_refused():
    with pytest.raises(ValueError, match="axial"):
        slice_axis_for_orientation(np.eye(4), "oblique")


@pytest.mark.parametrize("grid", GRIDS)
def test_image_to_node_to_image_round_trip_is_exact(scene, grid):
    matrix = GRIDS[grid]
    parts = geometry.geometry_from_ijk_to_ras(matrix)
    image = sitk.GetImageFromArray(box_volume().astype(np.float32))
    image.SetOrigin(parts.origin)
    image.SetSpacing(parts.spacing)
    image.SetDirection(parts.direction_flat())
    node = mrml.sitk_to_volume(scene, image, "from image")
    back = mrml.volume_to_sitk(node)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-12)


BRAIN = SHARED_DATA / "brain1_image.nrrd"


@pytest.mark.skipif(not BRAIN.is_file(), reason=f"real data folder absent ({BRAIN.name} not in ../shared/data)")
def test_real_brain_mri_with_flipped_axis_round_trips_exactly(scene):
    reference = sitk.ReadImage(str(BRAIN))
    assert reference.GetDirection()[4] == pytest.approx(-1.0)  # the flipped y axis this case is about

    # as SimpleITK / sitkUtils would push it
    node = mrml.sitk_to_volume(scene, reference, "brain1")
    pulled = mrml.volume_to_sitk(node)
    np.testing.assert_allclose(pulled.GetOrigin(), reference.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(pulled.GetSpacing(), reference.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(pulled.GetDirection(), reference.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pulled), sitk.GetArrayFromImage(reference))

    # as Slicer's own file reader loads it (it may store the slices in another order):
    # every voxel must still be at the same physical point with the same value
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "brain1 (Slicer reader)")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(BRAIN))
    assert storage.ReadData(loaded)
    pulled = mrml.volume_to_sitk(loaded)
    on_reference = sitk.Resample(pulled, reference, sitk.Transform(), sitk.sitkNearestNeighbor, -12345)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_reference), sitk.GetArrayFromImage(reference))

    # and a map pushed onto the loaded node lands on exactly its grid
    out = mrml.write_volume(scene, np.zeros(sitk.GetArrayFromImage(pulled).shape, np.float32), loaded, "map")
    np.testing.assert_array_equal(mrml.node_ijk_to_ras(out), mrml.node_ijk_to_ras(loaded))
