"""The output folder holds against hostile and careless files (issue 20, classes 3 and 6).

A manifest (``<stem>.xaiexplain.json``) and a commit journal are read back as
untrusted input: names outside the folder, malformed entries, devices, FIFOs
and huge files are refused by name before anything is removed.  The clean-up
of a crashed run removes only the names this tool makes, never a user's
hidden ``*.partial*`` file.  A list file that is ``/dev/zero`` or a FIFO is
refused by what it is.  Each case runs through the command line in process,
the Python API, and (where Dask is installed) ``--cluster local:1``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.cli.cohort import explain_cohort
from XAIExplainLib.cli.errors import UserError
from XAIExplainLib.cli.manifest import MANIFEST_ENDING
from XAIExplainLib.cli.staging import journal_name

MODEL = "ct-phase-2d"


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[Path]:
    from XAIExplainLib.imaging.phantoms import chest_phantom

    folder = tmp_path_factory.mktemp("scans")
    paths = []
    for seed in range(2):
        path = folder / f"ct{seed}.nrrd"
        sitk.WriteImage(chest_phantom(seed=seed, shape=(3, 32, 32),
                                      spacing=(8.0, 10.0, 10.0)).image(), str(path))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def done(scans, tmp_path_factory) -> Path:
    """An output folder a complete run of ``scans[0]`` wrote (copied by each test)."""
    out = tmp_path_factory.mktemp("done") / "out"
    assert cli.main(_args(scans[0], out)) == 0
    return out


def _args(scan: Path, out: Path, *extra: str) -> list[str]:
    return ["explain", str(scan), "--model", MODEL, "--method", "saliency", "--output-dir",
            str(out), "--quiet", *extra]


def _copy(done: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(done, out)
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _run(capsys, way: str, scan: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Explain ``scan`` into ``out`` in-process, through the API or on a one-worker cluster."""
    if way == "cli":
        status = cli.main(_args(scan, out, *extra))
        return status, capsys.readouterr().err
    if way == "cluster":
        pytest.importorskip("distributed")
        status = cli.main(_args(scan, out, *extra, "--cluster", "local:1"))
        return status, capsys.readouterr().err
    try:
        summary = explain_cohort(MODEL, [scan], out, ["saliency"], overwrite="--overwrite" in extra,
                                 stderr=io.StringIO())
    except UserError as exc:
        return 2, f"xaiexplain: error: {exc}\n"
    return (0 if summary.succeeded else 1), ""


# ---- manifests: only plain names of the input's own outputs, checked before any removal ---------

def _edit_manifest(out: Path, change) -> Path:
    path = out / ("ct0" + MANIFEST_ENDING)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("bad", ["../victim.txt", "ABSOLUTE", "sub/ct0_x.nrrd", "..", "notes.txt",
                                 "ct0" + MANIFEST_ENDING])
@pytest.mark.parametrize("way", ["cli", "api"])
def test_a_manifest_naming_a_file_elsewhere_removes_nothing(bad, way, done, scans, tmp_path,
                                                              capsys):
    out = _copy(done, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "notes.txt").write_text("mine")
    name = str(victim) if bad == "ABSOLUTE" else bad
    # another run's settings (so the re-run with --overwrite replaces its files) and a hostile name
    path = _edit_manifest(out, lambda d: (d["fingerprint"].update(methods=["gradcam"]),
                                          d["files"].append({"name": name, "bytes": 8})))
    before = _snapshot(out)
    status, err = _run(capsys, way, scans[0], out, "--overwrite")
    assert status == 2
    assert err == (f"xaiexplain: error: {path}: is not a valid xaiexplain manifest (files[2] "
                   f"names {name!r}, which is not a file name of ct0's outputs); remove it or "
                   "choose another --output-dir\n")
    assert victim.read_text() == "precious"
    assert _snapshot(out) == before


@pytest.mark.parametrize("files, problem", [
    ([{}], "files[0] names None, which is not a file name of ct0's outputs"),
    ("x", "its files are not a list"),
    ([["ct0_saliency.nrrd", 3]], "files[0] is not an object with a name and a size"),
    ([{"name": "ct0_saliency.nrrd", "bytes": "3"}], "files[0] has no size in bytes"),
])
@pytest.mark.parametrize("way", ["cli", "api", "cluster"])
def test_a_malformed_manifest_is_one_line_naming_it(files, problem, way, done, scans, tmp_path,
                                                     capsys):
    if way == "cluster" and files != "x":
        pytest.skip("one cluster variant is enough: the manifest is read before dispatch")
    out = _copy(done, tmp_path)
    path = _edit_manifest(out, lambda d: d.update(files=files))
    before = _snapshot(out)
    status, err = _run(capsys, way, scans[0], out)
    assert status == 2
    assert err == (f"xaiexplain: error: {path}: is not a valid xaiexplain manifest ({problem}); "
                   "remove it or choose another --output-dir\n")
    assert _snapshot(out) == before


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, what", [("dev-zero", "is a character device, not a regular file"),
                                        ("fifo", "is a FIFO (named pipe), not a regular file"),
                                        ("huge", "is larger than 4 MB, more than a file of this "
                                                 "kind holds")])
def test_a_manifest_that_is_a_device_a_fifo_or_huge_is_refused_by_name(kind, what, done, scans,
                                                                      tmp_path, capsys):
    if kind == "dev-zero" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    out = _copy(done, tmp_path)
    path = out / ("ct0" + MANIFEST_ENDING)
    path.unlink()
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        _fifo(path)
    else:
        path.write_bytes(b" " * (5 << 20))
    status, err = _run(capsys, "cli", scans[0], out)
    assert status == 2
    assert err == (f"xaiexplain: error: {path}: {what}; an xaiexplain manifest is a small JSON "
                   "file: remove it or choose another --output-dir\n")


def test_a_journal_naming_files_elsewhere_is_refused_before_removing_anything(done, scans,
                                                                               tmp_path, capsys):
    out = _copy(done, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    journal = out / journal_name("ct0")
    journal.write_text(json.dumps({"stage": "", "files": ["ct0_saliency.nrrd", "../victim.txt"]}))
    before = _snapshot(out)
    status, err = _run(capsys, "cli", scans[0], out)
    assert status == 2
    assert err == (f"xaiexplain: error: {journal}: is not a commit journal of xaiexplain for ct0 "
                   "(it names files that are not its outputs); remove it or choose another "
                   "--output-dir\n")
    assert victim.read_text() == "precious" and _snapshot(out) == before


# ---- the clean-up removes only what this tool made ------------------------------------------

@pytest.mark.parametrize("way", ["cli", "api"])
def test_the_clean_up_keeps_a_users_hidden_partial_files(way, done, scans, tmp_path, capsys):
    out = _copy(done, tmp_path)
    mine = [".notes.partial.txt", ".draft.partial", ".scan.1234abcd.partial.nrrd",
            ".xaiexplain-partial-notes.txt"]
    for name in mine:
        (out / name).write_text("user data")
    (out / ".xaiexplain-stage-mine").mkdir()  # no token: not a staging folder of ours
    (out / ".xaiexplain-stage-mine" / "keep.txt").write_text("user data")
    # what a crashed run of this tool leaves
    crashed = [".xaiexplain-partial-0123abcd-ct0_saliency.nrrd", ".xaiexplain-probe-ab_cd123"]
    for name in crashed:
        (out / name).write_text("half")
    (out / ".xaiexplain-stage-ct9-89abcdef").mkdir()
    (out / ".xaiexplain-stage-ct9-89abcdef" / "ct9_saliency.nrrd").write_text("half")
    status, err = _run(capsys, way, scans[0], out)
    assert status == 0, err
    assert all((out / name).read_text() == "user data" for name in mine)
    assert (out / ".xaiexplain-stage-mine" / "keep.txt").exists()
    assert not any((out / name).exists() for name in crashed)
    assert not (out / ".xaiexplain-stage-ct9-89abcdef").exists()


def test_a_symlink_named_like_a_staging_folder_is_removed_not_followed(done, scans, tmp_path,
                                                                       capsys):
    out = _copy(done, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("precious")
    (out / ".xaiexplain-stage-ct0-0123abcd").symlink_to(elsewhere)
    assert _run(capsys, "cli", scans[0], out)[0] == 0
    assert (elsewhere / "data.txt").read_text() == "precious"
    assert not os.path.lexists(out / ".xaiexplain-stage-ct0-0123abcd")


# ---- list files: devices and FIFOs by name, a size limit ------------------------------------

@pytest.mark.parametrize("kind, what", [("dev-zero", "is a character device, not a regular file"),
                                        ("fifo", "is a FIFO (named pipe), not a regular file"),
                                        ("huge", "is larger than 16 MB, more than a file of this "
                                                 "kind holds")])
@pytest.mark.parametrize("way", ["cli", "api"])
def test_a_list_file_that_is_a_device_a_fifo_or_huge_is_refused_by_name(kind, what, way, scans,
                                                                       tmp_path, capsys):
    if kind == "dev-zero" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    listing = tmp_path / "inputs.txt"
    if kind == "dev-zero":
        listing.symlink_to("/dev/zero")
    elif kind == "fifo":
        _fifo(listing)
    else:
        with listing.open("wb") as handle:
            handle.write((str(scans[0]) + "\n").encode() * ((17 << 20) // (len(str(scans[0])) + 1)))
    out = tmp_path / "out"
    message = f"{listing}: {what}; a list file is a text file naming one input path per line"
    if way == "cli":
        assert _run(capsys, way, listing, out) == (2, f"xaiexplain: error: {message}\n")
    else:  # the API reports the failed input in its summary
        summary = explain_cohort(MODEL, [listing], out, ["saliency"], stderr=io.StringIO())
        assert [(r.status, r.error) for r in summary.records] == [("failed", message)]
    assert not out.exists()
