"""The parts of the command line that need no model: discovery, reading checks, writing,
summary, progress, prefetch and the overlay montage.  Small images, no torch work."""
from __future__ import annotations

import csv
import io
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib.cli.demo import fresh_folder
from XAIExplainLib.cli.discovery import discover, image_stem
from XAIExplainLib.cli.errors import UserError
from XAIExplainLib.cli.montage import (display_top, heat_rgba, peak_index, render_overlay,
                                         views_through_peak)
from XAIExplainLib.cli.options import numpy_axis, parse_label_threshold
from XAIExplainLib.cli.prefetch import prefetch
from XAIExplainLib.cli.progress import Progress
from XAIExplainLib.cli.reading import check_image, grid_mismatch, read_item, read_mask
from XAIExplainLib.cli.summary import InputRecord, RunSummary
from XAIExplainLib.cli.writing import OutputFolder


def _volume(shape=(6, 10, 12), spacing=(0.8, 0.9, 2.5), seed=0) -> sitk.Image:
    noise = np.random.default_rng(seed).normal(0, 100, shape)
    image = sitk.GetImageFromArray(noise.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 5.0))
    return image


def write_dicom_series(image: sitk.Image, folder: Path,
                       uid: str = "1.2.826.0.1.3680043.2.1125.1") -> None:
    """One DICOM file per slice with the tags a series reader needs (position, orientation, UID)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (direction[0], direction[3], direction[6],
                                                   direction[1], direction[4], direction[7]))
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        piece.SetMetaData("0020|000e", uid)
        piece.SetMetaData("0020|000d", uid + ".9")
        piece.SetMetaData("0008|0060", "CT")
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0020|0037", orientation)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        piece.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.10g}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)


# ---- discovery -----------------------------------------------------------------------------

def test_stems_drop_image_endings_and_unsafe_characters():
    assert image_stem(Path("a/ct scan.nii.gz")) == "ct_scan"
    assert image_stem(Path("b/CT.NRRD")) == "CT"
    assert image_stem(Path("c/x.y.mha")) == "x.y"


def test_list_file_resolves_relative_paths_comments_and_reports_missing(tmp_path):
    sitk.WriteImage(_volume(), str(tmp_path / "one.nrrd"))
    (tmp_path / "sub").mkdir()
    sitk.WriteImage(_volume(), str(tmp_path / "sub" / "two.nii.gz"))
    listing = tmp_path / "cohort.txt"
    listing.write_text("# cohort\none.nrrd\n\nsub/two.nii.gz   # second\nmissing.nrrd\n")
    items = discover([str(listing)])
    assert [i.stem for i in items] == ["one", "two", "missing"]
    assert items[0].ok and items[1].ok and not items[2].ok
    assert "cohort.txt:5" in str(items[2].error) and "no such file" in str(items[2].error)


def test_colliding_stems_get_the_parent_folder_names_and_duplicates_run_once(tmp_path):
    for site, patient in (("a", "p01"), ("a", "p02"), ("b", "p02")):
        (tmp_path / site / patient).mkdir(parents=True)
        sitk.WriteImage(_volume(), str(tmp_path / site / patient / "ct.nrrd"))
    paths = [tmp_path / "a" / "p01" / "ct.nrrd", tmp_path / "a" / "p02" / "ct.nrrd",
             tmp_path / "b" / "p02" / "ct.nrrd"]
    same_again = tmp_path / "a" / "p01" / ".." / "p01" / "ct.nrrd"
    items = discover([str(p) for p in paths] + [str(same_again)])
    # p02 still collides after one parent, so both take the next one (never a number by order)
    assert [i.stem for i in items] == ["p01_ct", "a_p02_ct", "b_p02_ct"]
    assert [i.stem for i in discover([str(p) for p in reversed(paths)])] == \
        ["b_p02_ct", "a_p02_ct", "p01_ct"]


def test_folder_with_two_dicom_series_gives_two_inputs_with_their_geometry(tmp_path):
    first, second = _volume(seed=1), _volume(shape=(4, 10, 12), seed=2)
    write_dicom_series(first, tmp_path / "study", uid="1.2.3.4.1")
    write_dicom_series(second, tmp_path / "study2", uid="1.2.3.4.2")
    for path in (tmp_path / "study2").iterdir():
        path.rename(tmp_path / "study" / ("b_" + path.name))
    items = discover([str(tmp_path / "study")])
    assert [i.stem for i in items] == ["study_1", "study_2"]
    depths = sorted(read_item(i).GetDepth() for i in items)
    assert depths == [4, 6]
    one = next(read_item(i) for i in items if read_item(i).GetDepth() == 6)
    assert np.allclose(one.GetSpacing(), first.GetSpacing())
    assert np.allclose(one.GetOrigin(), first.GetOrigin())
    assert np.array_equal(sitk.GetArrayFromImage(one), sitk.GetArrayFromImage(first))


def test_empty_folder_is_a_reported_input(tmp_path):
    (tmp_path / "empty").mkdir()
    (item,) = discover([str(tmp_path / "empty")])
    assert not item.ok and "no DICOM series and no image files" in str(item.error)


# ---- reading checks ------------------------------------------------------------------------

@pytest.mark.parametrize("array, message", [
    (np.full((3, 4, 5), 7, np.int16), "is constant"),
    (np.where(np.arange(60).reshape(3, 4, 5) == 5, np.nan, 1.0).astype(np.float32), "NaN"),
    (np.zeros((2, 3, 4, 5), np.float32), "4D image"),
])
def test_check_image_refuses_what_cannot_be_explained(array, message):
    with pytest.raises(UserError, match=message):
        check_image(sitk.GetImageFromArray(array, isVector=False), "x.nrrd")


def test_non_image_file_and_mismatched_mask_are_user_errors(tmp_path):
    text = tmp_path / "notes.nrrd"
    text.write_text("not an image")
    (item,) = discover([str(text)])
    with pytest.raises(UserError, match="notes.nrrd: "):
        read_item(item)
    hollow = tmp_path / "hollow.nrrd"  # a header announcing zero voxels along x
    hollow.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 0 10 10\nencoding: raw\n\n")
    (item,) = discover([str(hollow)])
    with pytest.raises(UserError, match=r"hollow.nrrd: cannot be read as an image \((?!.*0x)"):
        read_item(item)
    image = _volume()
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[1, 1, 1] = 1
    mask.SetOrigin((10.0, -20.0, 6.0))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    with pytest.raises(UserError, match=r"mask.nrrd: does not match the grid of ct: origin"):
        read_mask(tmp_path / "mask.nrrd", image, "ct")
    assert grid_mismatch(image, image) == ""


def test_axis_names_follow_the_direction_matrix():
    image = _volume()
    assert [numpy_axis(image, n) for n in ("axial", "coronal", "sagittal")] == [0, 1, 2]
    # A sagittal acquisition: image k runs along physical x (L), i along y, j along z.
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    assert numpy_axis(image, "sagittal") == 0
    assert numpy_axis(image, "axial") == 1


def test_label_threshold_parsing():
    assert parse_label_threshold("otsu") == "otsu"
    assert parse_label_threshold("0.4") == 0.4
    for bad in ("1.5", "-0.1", "high", "nan"):
        with pytest.raises(UserError, match="--label-threshold"):
            parse_label_threshold(bad)


# ---- writing -------------------------------------------------------------------------------

def test_writer_refuses_existing_files_and_inputs_and_leaves_no_partial_file(tmp_path):
    source = tmp_path / "ct.nrrd"
    sitk.WriteImage(_volume(), str(source))
    out = OutputFolder(tmp_path, protected=[source])
    out.prepare()
    with pytest.raises(UserError, match="is one of the inputs"):
        out.check_free(["ct.nrrd"])
    out.write_text("a\n", "result.csv")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        out.write_text("b\n", "result.csv")
    assert (tmp_path / "result.csv").read_text(encoding="utf-8") == "a\n"

    def broken(path):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        out.write_with(broken, "picture.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "result.csv"]
    OutputFolder(tmp_path, overwrite=True).write_text("c\n", "result.csv")
    assert (tmp_path / "result.csv").read_text(encoding="utf-8") == "c\n"


def test_demo_gets_a_fresh_folder_when_the_default_one_is_used(tmp_path):
    base = tmp_path / "demo"
    assert fresh_folder(base) == base
    base.mkdir()
    assert fresh_folder(base) == base  # empty: reused
    (base / "summary.json").write_text("{}")
    assert fresh_folder(base) == tmp_path / "demo-2"


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        OutputFolder(blocker).prepare()
    with pytest.raises(UserError, match="cannot create the output folder"):
        OutputFolder(blocker / "sub").prepare()


# ---- summary, progress, prefetch -----------------------------------------------------------

def test_summary_json_and_csv_hold_one_row_per_input():
    summary = RunSummary(command="explain", model="m", methods=["gradcam"], device="cpu")
    ok = InputRecord("a.nrrd", "a", "ok", prediction={"predicted_class": "arterial",
                                                      "score": {"arterial": 0.9, "delayed": 0.1}},
                     timings={"gradcam": 0.25}, outputs=["a_gradcam.nrrd"], seconds=1.0)
    bad = InputRecord("b.nrrd", "b", "failed", error="b.nrrd: is constant")
    summary.records += [ok, bad]
    data = json.loads(summary.to_json())
    assert data["counts"] == {"inputs": 2, "ok": 1, "failed": 1, "partial": 0, "skipped": 0}
    assert data["inputs"][1]["error"] == "b.nrrd: is constant"
    rows = list(csv.DictReader(io.StringIO(summary.to_csv())))
    assert rows[0]["score_arterial"] == "0.9" and rows[0]["time_gradcam_s"] == "0.25"
    assert rows[1]["status"] == "failed" and rows[1]["device"] == "cpu"


def test_progress_writes_plain_lines_without_a_terminal_and_nothing_when_quiet():
    stream = io.StringIO()
    progress = Progress(2, stream=stream)
    progress.start(1, "a.nrrd")
    progress.step(0.5)
    progress.finish(True, "(1.0 s)")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/2] a.nrrd"
    # The cohort's tally: counts, the rate of computed inputs and the time left at that rate.
    assert re.fullmatch(r"\[1/2\] a\.nrrd: ok \(1\.0 s\) \| 1 done, 0 failed, 0 skipped; "
                        r"(\d+(\.\d)? (s|min) per input|\d+(\.\d)? inputs/s), ETA \d+:\d\d", lines[1]), lines[1]
    progress.skip(2, "b.nrrd")
    assert stream.getvalue().splitlines()[2] == "[2/2] b.nrrd: skipped (complete from an earlier run)"
    assert progress.tally().startswith("1 done, 0 failed, 1 skipped; ")
    assert "ETA" not in progress.tally()  # nothing left
    tty = io.StringIO()
    bar = Progress(2, stream=tty, interactive=True)
    bar.start(2, "b.nrrd")
    bar.step(1.0, "explaining")
    assert "[########################] 100%" in tty.getvalue()
    quiet = io.StringIO()
    silent = Progress(2, stream=quiet, enabled=False)
    silent.start(1, "a")
    silent.finish(False, "")
    assert quiet.getvalue() == ""


def test_prefetch_reads_ahead_in_order_and_hands_over_errors():
    """Events, not sleeps: before, the consumer slept 0.1 s and expected both readers to have
    started by then, which a busy machine need not grant."""
    started = {n: threading.Event() for n in range(5)}

    def read(n):
        started[n].set()
        if n == 2:
            raise ValueError("bad two")
        return n * 10

    seen = []
    for item, value, error in prefetch([0, 1, 2, 3, 4], read, jobs=2):
        if item == 0:  # while the caller computes, the readers move on (however long that takes)
            assert started[1].wait(60) and started[2].wait(60)
            assert not started[3].is_set() and not started[4].is_set()  # at most ``jobs`` inputs ahead
        seen.append((item, value, None if error is None else str(error)))
    assert seen == [(0, 0, None), (1, 10, None), (2, None, "bad two"), (3, 30, None), (4, 40, None)]
    assert [v for _, v, _ in prefetch([1, 2, 3], lambda n: n + 1, jobs=0)] == [2, 3, 4]


# ---- montage -------------------------------------------------------------------------------

def test_views_cross_at_the_peak_and_respect_spacing_and_orientation():
    image = _volume(shape=(6, 10, 12), spacing=(0.8, 0.9, 2.5))
    heat = np.zeros((6, 10, 12), np.float32)
    heat[4, 3, 9] = 1.0
    heat_image = sitk.GetImageFromArray(heat)
    heat_image.CopyInformation(image)
    axial, coronal, sagittal = views_through_peak(image, heat_image)
    assert peak_index(heat) == (4, 3, 9)
    assert axial.heat[3, 9] == 1.0 and coronal.heat[4, 9] == 1.0 and sagittal.heat[4, 3] == 1.0
    assert axial.extent == (0.0, 12 * 0.8, 10 * 0.9, 0.0)  # mm, not voxels
    assert coronal.extent[3] == 6 * 2.5 and coronal.letters == ("R", "L", "S", "I")
    # A volume stored head-first-down (z flipped) is shown the same way up.
    flipped = sitk.Flip(image, (False, False, True))
    flipped_heat = sitk.Flip(heat_image, (False, False, True))
    _, coronal_flipped, _ = views_through_peak(flipped, flipped_heat)
    assert np.array_equal(coronal_flipped.image, coronal.image)


def test_heat_colours_are_transparent_for_faint_values():
    import matplotlib

    rgba = heat_rgba(np.array([0.0, 0.1, 0.5, 1.0]), matplotlib.colormaps["inferno"])
    assert rgba[0, 3] == 0 and rgba[1, 3] == 0 and 0 < rgba[2, 3] < rgba[3, 3]


def test_spiky_maps_get_a_capped_colour_scale_smooth_maps_keep_0_to_1():
    rng = np.random.default_rng(0)
    smooth = np.clip(rng.normal(0.5, 0.2, 10_000), 0, 1)
    smooth[0] = 1.0
    assert display_top(smooth) == 1.0
    spiky = rng.exponential(0.04, 10_000)
    spiky[:3] = 1.0
    top = display_top(spiky)
    assert top == pytest.approx(np.percentile(spiky, 99.5)) and 0.1 < top < 0.5
    needle = np.zeros(10_000)
    needle[:3] = 1.0
    assert display_top(needle) == pytest.approx(0.1)  # never amplify more than 10 x
    assert display_top(np.zeros(5)) == 1.0


def test_overlay_png_is_written_with_three_views(tmp_path):
    image = _volume(shape=(8, 24, 24), spacing=(1.0, 1.0, 3.0))
    heat = np.zeros((8, 24, 24), np.float32)
    heat[5, 10:14, 6:9] = 1.0
    heat_image = sitk.GetImageFromArray(heat)
    heat_image.CopyInformation(image)
    render_overlay(image, heat_image, tmp_path / "o.png", "ct · Grad-CAM · class x", "model m")
    from PIL import Image

    with Image.open(tmp_path / "o.png") as picture:
        width, height = picture.size
        pixels = np.asarray(picture.convert("RGB"))
    assert width > 2 * height  # three views side by side and a colour bar
    assert (pixels.max(axis=2) > 200).any()  # the bright heat is drawn
