"""A resume never hands one scan's outputs to another (issue 20, class 3, cases a, b, c).

(a) another ``b/ct.nrrd`` into a folder holding ``a/ct.nrrd``'s outputs, (b) two
inputs with the same relative name given in the other order, (c) an input file
rewritten with a new scan.  The manifest records the input's resolved path,
size, modification time and a hash of its beginning and end; a mismatch needs
``--overwrite`` and then recomputes.  Stems depend on the set of inputs, never
on their order.  Each case runs in process, through the API and (with Dask)
on ``--cluster local:1``; a fresh run of the input alone is the reference.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.cli.cohort import explain_cohort
from XAIExplainLib.cli.discovery import InputItem, unique_stems
from XAIExplainLib.cli.errors import UserError
from XAIExplainLib.cli.manifest import MANIFEST_ENDING

MODEL = "ct-phase-2d"


def _scan(path: Path, seed: int) -> Path:
    from XAIExplainLib.imaging.phantoms import chest_phantom

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(chest_phantom(seed=seed, shape=(3, 32, 32), spacing=(8.0, 10.0, 10.0)).image(),
                    str(path))
    return path


def _explain(way: str, capsys, inputs, out: Path, *extra: str) -> tuple[int, str]:
    if way == "api":
        try:
            summary = explain_cohort(MODEL, inputs, out, ["saliency"],
                                     overwrite="--overwrite" in extra, stderr=io.StringIO())
        except UserError as exc:
            return 2, f"xaiexplain: error: {exc}\n"
        return (0 if len(summary.succeeded) == len(summary.records) else 1), ""
    if way == "cluster":
        pytest.importorskip("distributed")
        extra = (*extra, "--cluster", "local:1")
    status = cli.main(["explain", *map(str, inputs), "--model", MODEL, "--method", "saliency",
                       "--output-dir", str(out), "--quiet", *extra])
    return status, capsys.readouterr().err


def _heat(out: Path, stem: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{stem}_saliency.nrrd")))


def _rows(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in json.loads((out / "summary.json").read_text())["inputs"]}


@pytest.mark.parametrize("way", ["cli", "api", "cluster"])
def test_a_other_scan_of_the_same_name_is_not_given_the_first_ones_outputs(way, tmp_path, capsys):
    a, b = _scan(tmp_path / "a" / "ct.nrrd", 1), _scan(tmp_path / "b" / "ct.nrrd", 2)
    out = tmp_path / "out"
    assert _explain(way, capsys, [a], out)[0] == 0
    first = _heat(out, "ct")
    status, err = _explain(way, capsys, [b], out)
    assert status == 2
    assert err == (f"xaiexplain: error: {out / ('ct' + MANIFEST_ENDING)}: the outputs of {b} were "
                   f"made from another input ({a.resolve()}); pass --overwrite to replace them or "
                   "choose another --output-dir\n")
    np.testing.assert_array_equal(_heat(out, "ct"), first)  # nothing replaced
    assert _explain(way, capsys, [b], out, "--overwrite")[0] == 0
    alone = tmp_path / "alone"
    assert _explain("cli", capsys, [b], alone)[0] == 0
    np.testing.assert_array_equal(_heat(out, "ct"), _heat(alone, "ct"))
    assert not np.array_equal(_heat(out, "ct"), first)
    assert _rows(out)[str(b)]["skipped"] is False


@pytest.mark.parametrize("way", ["cli", "api"])
def test_b_the_argument_order_does_not_swap_outputs(way, tmp_path, capsys):
    x, y = _scan(tmp_path / "x" / "scan" / "ct.nrrd", 1), _scan(tmp_path / "y" / "scan" / "ct.nrrd", 2)
    out = tmp_path / "out"
    assert _explain(way, capsys, [x, y], out)[0] == 0
    stems = {k: r["stem"] for k, r in _rows(out).items()}
    assert stems == {str(x): "x_scan_ct", str(y): "y_scan_ct"}
    heat = {stem: _heat(out, stem) for stem in stems.values()}
    assert _explain(way, capsys, [y, x], out)[0] == 0
    rows = _rows(out)
    assert {k: r["stem"] for k, r in rows.items()} == stems
    assert all(r["skipped"] for r in rows.values())
    for stem, values in heat.items():
        np.testing.assert_array_equal(_heat(out, stem), values)
    alone = tmp_path / "alone"
    assert _explain("cli", capsys, [x], alone)[0] == 0
    np.testing.assert_array_equal(_heat(out, "x_scan_ct"), _heat(alone, "ct"))


@pytest.mark.parametrize("way", ["cli", "api", "cluster"])
def test_c_an_input_rewritten_with_a_new_scan_is_not_skipped(way, tmp_path, capsys):
    scan = _scan(tmp_path / "ct.nrrd", 1)
    out = tmp_path / "out"
    assert _explain(way, capsys, [scan], out)[0] == 0
    first = _heat(out, "ct")
    _scan(scan, 2)  # the same name, another scan (same size and header)
    status, err = _explain(way, capsys, [scan], out)
    assert status == 2
    assert err.startswith(f"xaiexplain: error: {out / ('ct' + MANIFEST_ENDING)}: the outputs of "
                          f"{scan} were made before the input changed (")
    assert "its content" in err and err.endswith("); pass --overwrite to replace them or choose "
                                                 "another --output-dir\n")
    np.testing.assert_array_equal(_heat(out, "ct"), first)
    assert _explain(way, capsys, [scan], out, "--overwrite")[0] == 0
    alone = tmp_path / "alone"
    assert _explain("cli", capsys, [scan], alone)[0] == 0
    np.testing.assert_array_equal(_heat(out, "ct"), _heat(alone, "ct"))
    from XAIExplainLib.cli.identity import input_identity

    manifest = json.loads((out / ("ct" + MANIFEST_ENDING)).read_text())
    assert manifest["input"] == input_identity(InputItem(str(scan), scan, "ct"))


def test_a_copy_of_the_same_bytes_elsewhere_is_another_input(tmp_path, capsys):
    """Same content, other path: not reused either (the manifest names the file it was made from)."""
    a = _scan(tmp_path / "a" / "ct.nrrd", 1)
    b = tmp_path / "b" / "ct.nrrd"
    b.parent.mkdir()
    shutil.copy2(a, b)
    out = tmp_path / "out"
    assert _explain("cli", capsys, [a], out)[0] == 0
    status, err = _explain("cli", capsys, [b], out)
    assert status == 2 and f"were made from another input ({a.resolve()})" in err


def test_the_identity_sees_a_change_in_the_middle_of_a_big_file(tmp_path):
    """The hash samples the start and the end; size and modification time catch the middle."""
    from XAIExplainLib.cli.identity import input_identity

    path = tmp_path / "big.nrrd"
    path.write_bytes(bytes(5 << 20))
    item = InputItem(str(path), path, "big")
    before = input_identity(item)
    with path.open("r+b") as handle:
        handle.seek(2 << 20)
        handle.write(b"\1")
    os.utime(path, ns=(before["mtime_ns"] + 10**9, before["mtime_ns"] + 10**9))
    after = input_identity(item)
    assert after["sha256"] == before["sha256"] and after["mtime_ns"] != before["mtime_ns"]


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_stems_are_the_same_in_every_order(order, tmp_path):
    import itertools

    paths = [tmp_path / "x" / "scan" / "ct.nrrd", tmp_path / "y" / "scan" / "ct.nrrd",
             tmp_path / "scan_ct.nrrd", tmp_path / "a b" / "scan" / "ct.nrrd",
             tmp_path / "a_b" / "scan" / "ct.nrrd"]
    items = [InputItem(str(p), p, "ct" if p.name == "ct.nrrd" else "scan_ct") for p in paths]
    reference = {i.source: i.stem for i in unique_stems(items)}
    shuffled = list(itertools.permutations(items))[order * 17]
    assert {i.source: i.stem for i in unique_stems(list(shuffled))} == reference
    assert len(set(reference.values())) == len(items)
