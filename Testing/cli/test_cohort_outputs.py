"""An input's outputs appear together or not at all, and a re-run resumes (issues 12 and 15).

Each case of issue 12 (items 9 to 12) is driven the way a user meets it: a
layer that does not fit, a disk that fills up at the second file, Ctrl-C and
SIGTERM in the middle of a write, a summary that cannot be written, a second
run into a folder in use, a loop of symbolic links among the inputs.  The
resume cases kill a real run with SIGKILL and check, file by file, that the
re-run leaves the complete inputs untouched and computes only the rest.
Volumes are tiny (4 x 32 x 32) so that the whole file runs in seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.cli import writing
from XAIExplainLib.cli.errors import UserError
from XAIExplainLib.cli.folder_lock import FolderLock
from XAIExplainLib.cli.manifest import MANIFEST_ENDING
from XAIExplainLib.cli.staging import journal_name

MODEL = "ct-phase-2d"
LIB = Path(__file__).resolve().parents[2] / "XAIExplain"


def run_main(capsys, *args) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cli_process(*args, script: str = "") -> subprocess.Popen:
    """``python -m XAIExplainLib.cli ARGS`` in a new process, after ``script`` (a fault to inject)."""
    code = textwrap.dedent(script) + ("\nimport sys\nfrom XAIExplainLib import cli\n"
                                      "sys.exit(cli.main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(LIB)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> list[Path]:
    from XAIExplainLib.imaging.phantoms import chest_phantom

    folder = tmp_path_factory.mktemp("cohort")
    paths = []
    for seed in range(6):
        path = folder / f"ct{seed}.nrrd"
        image = chest_phantom(seed=seed, shape=(4, 32, 32), spacing=(8.0, 10.0, 10.0)).image()
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() \
        else set()


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def listed_in_manifests(folder: Path) -> set[str]:
    names = set()
    for manifest in folder.glob("*" + MANIFEST_ENDING):
        names.add(manifest.name)
        names.update(f["name"] for f in json.loads(manifest.read_text())["files"])
    return names


def fail_on_write(monkeypatch, number: int, error: BaseException) -> list[str]:
    """The ``number``-th image write raises ``error`` (after creating a half file)."""
    written: list[str] = []
    real = sitk.WriteImage

    def write(image, path, *args, **kwargs):
        written.append(str(path))
        if len(written) == number:
            Path(path).write_bytes(b"half an image")
            raise error
        return real(image, path, *args, **kwargs)

    monkeypatch.setattr(writing.sitk, "WriteImage", write)
    return written


# ---- issue 12, item 9: nothing is written for an input that fails ---------------------------

def test_a_layer_that_does_not_fit_is_refused_before_any_file_is_written(volumes, tmp_path,
                                                                          capsys):
    """saliency runs before scorecam, which alone uses the layer: today's main wrote its files."""
    out = tmp_path / "out"
    args = ["explain", volumes[0], "--model", MODEL, "--method", "saliency", "--method",
            "scorecam", "--layer", "no.such.layer", "--output-dir", out, "--quiet"]
    status, _, stderr = run_main(capsys, *args)
    assert status == 2
    assert stderr.startswith("xaiexplain: error: --layer no.such.layer: the model has no layer "
                             "named 'no.such.layer'; available layers: features, ")
    assert stderr.rstrip().endswith("(used by scorecam)")
    assert not out.exists()


@pytest.mark.parametrize("fault", ["disk full", "ctrl-c"])
def test_a_failure_at_the_second_file_leaves_nothing_and_the_rerun_succeeds(fault, volumes,
                                                                          tmp_path, capsys,
                                                                          monkeypatch):
    out = tmp_path / "out"
    args = ["explain", volumes[0], "--model", MODEL, "--method", "gradcam", "--method",
            "saliency", "--output-dir", out, "--quiet"]
    error = (RuntimeError("WriteImage: No space left on device") if fault == "disk full"
             else KeyboardInterrupt())
    written = fail_on_write(monkeypatch, 2, error)
    status, _, stderr = run_main(capsys, *args)
    assert len(written) == 2  # the first heatmap was written, the second failed
    if fault == "disk full":
        assert status == 2
        assert "No space left on device" in stderr
    else:
        assert status == 130
        assert stderr == "xaiexplain: interrupted; outputs already written are complete\n"
    assert visible(out) == set() and hidden(out) == []
    monkeypatch.undo()
    assert run_main(capsys, *args)[0] == 0  # no "already exists" from a half-done input
    assert visible(out) == {"ct0_gradcam.nrrd", "ct0_saliency.nrrd", "ct0_prediction.csv",
                            "ct0" + MANIFEST_ENDING, "summary.json", "summary.csv"}


# ---- issue 12, item 10: SIGTERM cleans up like Ctrl-C ---------------------------------------

def test_sigterm_during_a_write_leaves_no_partial_file(volumes, tmp_path):
    out = tmp_path / "out"
    fault = """
        import os, signal
        import SimpleITK as sitk
        real = sitk.WriteImage
        def write_then_terminate(image, path, *args, **kwargs):
            real(image, path, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the file is a temporary
        sitk.WriteImage = write_then_terminate
    """
    process = cli_process("explain", volumes[0], "--model", MODEL, "--method", "gradcam",
                          "--output-dir", out, "--quiet", script=fault)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.endswith("xaiexplain: terminated (SIGTERM); outputs already written are "
                           "complete\n")
    assert visible(out) == set() and hidden(out) == []


# ---- issue 12, item 11: the summary, and one run per folder ---------------------------------

def test_an_unwritable_summary_fails_the_run_and_names_the_files(volumes, tmp_path, capsys,
                                                                monkeypatch):
    real = writing.OutputFolder.write_text

    def write_text(self, text, name):
        if name.startswith("summary."):
            raise UserError(self.destination(name), "cannot be written (No space left on device)")
        return real(self, text, name)

    monkeypatch.setattr(writing.OutputFolder, "write_text", write_text)
    out = tmp_path / "out"
    status, stdout, stderr = run_main(capsys, "explain", volumes[0], volumes[1], "--model", MODEL,
                                      "--method", "gradcam", "--output-dir", out)
    assert status == 1
    errors = [line for line in stderr.splitlines() if line.startswith("xaiexplain: error:")]
    assert errors == [f"xaiexplain: error: {out / name}: cannot be written (No space left on "
                      f"device); the run's summary is incomplete (each input's "
                      f"<stem>{MANIFEST_ENDING} holds its row)"
                      for name in ("summary.json", "summary.csv")]
    assert "summary.json and summary.csv NOT written" in stdout
    assert {"ct0_gradcam.nrrd", "ct1_gradcam.nrrd"} <= visible(out)


def test_a_folder_in_use_by_another_run_is_refused(volumes, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    args = ["explain", volumes[0], "--model", MODEL, "--method", "gradcam", "--output-dir", out,
            "--quiet"]
    with FolderLock(out):  # what a run holds while it writes into the folder
        status, _, stderr = run_main(capsys, *args)
        assert status == 2
        assert stderr == (f"xaiexplain: error: {out}: is in use by another xaiexplain run "
                          f"(process {os.getpid()}); wait for it to finish or choose another "
                          "--output-dir\n")
        assert visible(out) == set()
    assert run_main(capsys, *args)[0] == 0
    assert hidden(out) == []  # the lock goes with its run


def test_a_second_run_while_the_first_writes_is_refused_and_loses_no_row(volumes, tmp_path):
    """Two real processes: the first waits inside its first write until the second was refused."""
    out, go = tmp_path / "out", tmp_path / "go"
    pause = f"""
        import os, time
        import SimpleITK as sitk
        real = sitk.WriteImage
        def write_when_allowed(*args, **kwargs):
            while not os.path.exists({str(go)!r}):
                time.sleep(0.01)
            return real(*args, **kwargs)
        sitk.WriteImage = write_when_allowed
    """
    common = ["--model", MODEL, "--method", "gradcam", "--output-dir", out, "--quiet"]
    first = cli_process("explain", volumes[0], volumes[1], *common, script=pause)
    try:
        deadline = time.monotonic() + 120
        while not any(out.glob(".xaiexplain-stage-*")) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.01)
        second = cli_process("explain", volumes[2], *common)
        _, second_err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert second_err == (f"xaiexplain: error: {out}: is in use by another xaiexplain run "
                              f"(process {first.pid}); wait for it to finish or choose another "
                              "--output-dir\n")
    finally:
        go.touch()
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    rows = json.loads((out / "summary.json").read_text())["inputs"]
    assert [(r["stem"], r["status"]) for r in rows] == [("ct0", "ok"), ("ct1", "ok")]


# ---- issue 12, item 12: a loop of links is one failed input ---------------------------------

def test_a_symlink_loop_fails_that_input_only(volumes, tmp_path, capsys):
    loop = tmp_path / "loop.nrrd"
    loop.symlink_to(loop)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "ct.nrrd").symlink_to(volumes[1])
    (folder / "cycle.nrrd").symlink_to(folder / "cycle.nrrd")
    out = tmp_path / "out"
    status, _, stderr = run_main(capsys, "explain", volumes[0], loop, folder, "--model", MODEL,
                                 "--method", "gradcam", "--output-dir", out, "--quiet")
    assert status == 1
    problem = "is a symbolic link that leads nowhere (a loop of links or a missing target)"
    assert stderr.splitlines() == [f"xaiexplain: error: {loop}: {problem}",
                                   f"xaiexplain: error: {folder / 'cycle.nrrd'}: {problem}"]
    rows = json.loads((out / "summary.json").read_text())["inputs"]
    assert [(r["stem"], r["status"]) for r in rows] == [("ct0", "ok"), ("loop", "failed"),
                                                        ("ct", "ok"), ("cycle", "failed")]


# ---- issue 15: the --cluster option without a cluster -------------------------------------

@pytest.mark.parametrize("value, problem", [
    ("local:0", "the number of local workers must be a positive integer, as in local:4"),
    ("somewhere", "must be local:N (N worker processes on this machine) or the address of a "
                  "running Dask scheduler, as in tcp://HOST:8786"),
])
def test_a_bad_cluster_value_is_refused_before_any_work(value, problem, volumes, tmp_path,
                                                        capsys):
    out = tmp_path / "out"
    status, _, stderr = run_main(capsys, "explain", volumes[0], "--model", MODEL, "--method",
                                 "gradcam", "--cluster", value, "--output-dir", out)
    assert (status, stderr) == (2, f"xaiexplain: error: --cluster {value}: {problem}\n")
    assert not out.exists()


def test_without_dask_the_cluster_option_says_how_to_install_it(volumes, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    out = tmp_path / "out"
    status, _, stderr = run_main(capsys, "explain", volumes[0], "--model", MODEL, "--method",
                                 "gradcam", "--cluster", "local:2", "--output-dir", out)
    assert (status, stderr) == (2, 'xaiexplain: error: --cluster: needs Dask, which is not '
                                   'installed (pip install "xaiexplain[cluster]")\n')
    assert not out.exists()


# ---- issue 15: resumable -------------------------------------------------------------------

def test_a_killed_run_resumes_without_recomputing_complete_inputs(volumes, tmp_path, capsys):
    """The run is held (not timed) where the kill must land: ct0 committed, ct1 being read. Before,
    the test polled for the first manifest and killed then, and a busy machine let the run finish
    more inputs (or all of them) before the kill arrived."""
    out, held = tmp_path / "out", tmp_path / "held"
    hold_at_ct1 = f"""
        import time
        from XAIExplainLib.cli import reading
        real = reading.read_item
        def read_item(item, *args, **kwargs):
            if item.stem == "ct1":  # inputs are read in turn (--jobs 0): ct0 is committed by now
                open({str(held)!r}, "w").close()
                while True:  # held until the test kills the process
                    time.sleep(0.05)
            return real(item, *args, **kwargs)
        reading.read_item = read_item
    """
    args = ["explain", *volumes, "--model", MODEL, "--method", "integrated_gradients",
            "--method", "gradcam", "--output-dir", out, "--quiet", "--jobs", "0"]
    process = cli_process(*args, script=hold_at_ct1)
    deadline = time.monotonic() + 300
    while not held.exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    done = {m.name[: -len(MANIFEST_ENDING)] for m in out.glob("*" + MANIFEST_ENDING)}
    assert done == {"ct0"}, "the kill did not land after the first input"
    # Only complete inputs are visible: every file belongs to a manifest.
    assert visible(out) <= listed_in_manifests(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}

    status, _, stderr = run_main(capsys, *args)
    assert status == 0, stderr
    rows = json.loads((out / "summary.json").read_text())["inputs"]
    assert [r["status"] for r in rows] == ["ok"] * len(volumes)
    assert {r["stem"] for r in rows if r["skipped"]} == done
    for name, stamp in stamps.items():
        assert (out / name).stat().st_mtime_ns == stamp, f"{name} was written again"
    assert hidden(out) == []  # the killed run's staging folder and lock are gone
    assert len(visible(out)) == 4 * len(volumes) + 2


def test_a_commit_cut_short_is_taken_back_and_redone(volumes, tmp_path, capsys):
    """Killed between moving an input's files and writing its manifest: the files go again."""
    out = tmp_path / "out"
    args = ["explain", volumes[0], "--model", MODEL, "--method", "gradcam", "--output-dir",
            out, "--quiet"]
    assert run_main(capsys, *args)[0] == 0
    manifest = json.loads((out / ("ct0" + MANIFEST_ENDING)).read_text())
    files = [f["name"] for f in manifest["files"]]
    (out / ("ct0" + MANIFEST_ENDING)).unlink()
    (out / files[0]).unlink()  # the commit had moved one file of two
    (out / journal_name("ct0")).write_text(json.dumps({"stage": "", "files": files}))
    status, _, stderr = run_main(capsys, *args)
    assert status == 0, stderr
    assert json.loads((out / "summary.json").read_text())["inputs"][0]["skipped"] is False
    assert visible(out) == set(files) | {"ct0" + MANIFEST_ENDING, "summary.json", "summary.csv"}
    assert hidden(out) == []
