"""Cohorts on a Dask ``LocalCluster`` of worker processes (issue 15).

One cluster of two processes serves the whole module (starting one takes
seconds).  The in-process run is the reference: the cluster must write the
same bytes and the same summary rows, whatever worker finishes first; each
worker must load the model once; a worker killed with SIGKILL mid-input
must lose nothing; a bad input must be reported once and not retried; and
the command line's ``--cluster local:2``, stopped with SIGTERM and run again,
must finish without recomputing what was complete.
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

distributed = pytest.importorskip("distributed")

from XAIExplainLib.cli.cohort import explain_cohort  # noqa: E402
from XAIExplainLib.cli.explain_one import model_loads  # noqa: E402
from XAIExplainLib.cli.run_plan import ExplainSettings  # noqa: E402
from XAIExplainLib.cli.manifest import MANIFEST_ENDING  # noqa: E402
from XAIExplainLib.cli.staging import STAGE_PREFIX  # noqa: E402

from .test_cohort_outputs import cli_process, hidden, visible  # noqa: E402

MODEL = "ct-phase-2d"


@pytest.fixture(scope="module")
def client():
    from XAIExplainLib.cli.cluster import start_local_cluster

    cluster, _ = start_local_cluster(2, ExplainSettings(model=MODEL, methods=("gradcam",),
                                                        device="cpu"))
    with cluster, distributed.Client(cluster) as connected:
        yield connected


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> list[Path]:
    """Five small CT volumes and, in the middle, a constant one no model can be shown."""
    from XAIExplainLib.imaging.phantoms import chest_phantom

    folder = tmp_path_factory.mktemp("cohort")
    paths = []
    for seed in range(5):
        path = folder / f"ct{seed}.nrrd"
        sitk.WriteImage(chest_phantom(seed=seed, shape=(4, 32, 32),
                                      spacing=(8.0, 10.0, 10.0)).image(), str(path))
        paths.append(path)
    constant = folder / "constant.nrrd"
    sitk.WriteImage(sitk.Image([32, 32, 4], sitk.sitkInt16), str(constant))
    return paths[:2] + [constant] + paths[2:]


def _rows(summary) -> list[dict]:
    """The rows without what depends on where and how fast they ran."""
    keep = ("input", "stem", "status", "error", "prediction", "outputs", "skipped")
    return [{k: getattr(r, k) for k in keep} for r in summary.records]


def test_the_cluster_writes_exactly_what_the_in_process_run_writes(client, cohort, tmp_path):
    options = dict(methods=["gradcam", "saliency"], label_threshold="otsu")
    here_err, there_err = io.StringIO(), io.StringIO()
    here = explain_cohort(MODEL, cohort, tmp_path / "here", stderr=here_err, **options)
    there = explain_cohort(MODEL, cohort, tmp_path / "there", client=client, stderr=there_err,
                           **options)
    assert _rows(there) == _rows(here)
    assert [r.status for r in here.records] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    names = visible(tmp_path / "here")
    assert names == visible(tmp_path / "there") and len(names) == 5 * 6 + 2
    for name in sorted(names - {"summary.json", "summary.csv"}):
        a, b = tmp_path / "here" / name, tmp_path / "there" / name
        if name.endswith(".nrrd"):
            ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
            assert np.array_equal(sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib)), name
            assert (ia.GetOrigin(), ia.GetSpacing(), ia.GetDirection()) == \
                   (ib.GetOrigin(), ib.GetSpacing(), ib.GetDirection())
        elif name.endswith(MANIFEST_ENDING):
            ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
            assert (ma["fingerprint"], ma["files"]) == (mb["fingerprint"], mb["files"]), name
        else:
            assert a.read_bytes() == b.read_bytes(), name
    # The bad input: reported once, by both, and not retried on the cluster.
    bad = f"xaiexplain: error: {cohort[2]}: is constant (every voxel is 0); there is nothing " \
          "to explain\n"
    assert here_err.getvalue() == bad and there_err.getvalue() == bad
    # Each row says which worker and device made it.
    workers = set(client.scheduler_info()["workers"])
    assert {r.worker for r in there.records} <= workers
    assert {r.device for r in there.records} == {"cpu"}
    rows = json.loads((tmp_path / "there" / "summary.json").read_text())["inputs"]
    assert [r["worker"] for r in rows] == [r.worker for r in there.records]
    # Each worker loaded the model once, however many inputs it explained.
    per_worker = {w: sum(r.worker == w for r in there.records) for w in workers}
    assert sum(per_worker.values()) == len(cohort) and max(per_worker.values()) >= 2
    loads = client.run(model_loads)
    assert all(loads[w] == {MODEL: 1} for w, n in per_worker.items() if n)


def test_cli_joins_a_running_scheduler_by_its_address(client, cohort, tmp_path, capsys):
    from XAIExplainLib import cli

    out = tmp_path / "out"
    address = client.scheduler.address
    status = cli.main(["explain", *map(str, cohort[:2]), "--model", MODEL, "--method",
                       "gradcam", "--cluster", address, "--output-dir", str(out), "--quiet"])
    assert status == 0, capsys.readouterr().err
    rows = json.loads((out / "summary.json").read_text())["inputs"]
    assert {r["worker"] for r in rows} <= set(client.scheduler_info()["workers"])
    assert json.loads((out / "summary.json").read_text())["options"]["cluster"] == address

    status = cli.main(["explain", str(cohort[0]), "--model", MODEL, "--method", "gradcam",
                       "--cluster", "tcp://127.0.0.1:9", "--output-dir", str(tmp_path / "no")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("xaiexplain: error: --cluster tcp://127.0.0.1:9: cannot reach the Dask "
                          "scheduler (")
    assert err.endswith("); start one with 'dask scheduler' or check the address\n")
    assert not (tmp_path / "no").exists()


class HoldFirstAttempt(distributed.WorkerPlugin):
    """A worker plugin: the first worker to read the input ``stem`` writes its process id and
    address to ``marker`` and waits there, mid-input (its staging folder made), until it is
    killed; later attempts (the marker exists) read it as usual."""

    name = "xaiexplain-test-hold-first"

    def __init__(self, stem: str, marker: str):
        self.stem, self.marker = stem, marker

    def setup(self, worker):
        from XAIExplainLib.cli import reading

        real, stem, marker, address = reading.read_item, self.stem, self.marker, worker.address

        def read_item(item, *args, **kwargs):
            if item.stem == stem and not os.path.exists(marker):
                with open(marker + ".tmp", "w") as file:
                    file.write(f"{os.getpid()} {address}")
                os.replace(marker + ".tmp", marker)
                while True:  # held until the test kills this worker
                    time.sleep(0.05)
            return real(item, *args, **kwargs)

        reading.read_item = read_item


def test_a_worker_killed_mid_input_loses_nothing(client, cohort, tmp_path):
    """The worker is caught mid-input by a hold (not by polling the scheduler): before, the test
    looked for a worker busy with a staged input and killed it, and on a busy machine the input
    could finish in between."""
    import cloudpickle

    good = [p for p in cohort if p.name != "constant.nrrd"]
    out, marker, stem = tmp_path / "out", tmp_path / "held", "ct1"
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(summary=explain_cohort(
        MODEL, good, out, ["integrated_gradients"], client=client, stderr=io.StringIO())), daemon=True)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import it
    client.register_plugin(HoldFirstAttempt(stem, str(marker)))
    try:
        run.start()
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing
        while not marker.exists() and time.monotonic() < deadline and run.is_alive():
            time.sleep(0.005)
        assert marker.exists(), "no worker read the held input"
        pid, victim = marker.read_text().split()
        assert any(p.name.startswith(STAGE_PREFIX + stem) for p in out.iterdir())  # mid-input
        os.kill(int(pid), signal.SIGKILL)
        run.join(timeout=600)
    finally:
        client.unregister_worker_plugin(HoldFirstAttempt.name)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert not run.is_alive(), "the cohort did not finish after the worker was killed"
    summary = result["summary"]
    assert [r.status for r in summary.records] == ["ok"] * len(good)
    redone = next(r for r in summary.records if r.stem == stem)
    assert redone.worker != victim  # retried on another (or the restarted) worker
    assert visible(out) == {f"{p.name[:-5]}{end}" for p in good for end in (
        "_integrated_gradients.nrrd", "_prediction.csv", MANIFEST_ENDING)} | \
        {"summary.json", "summary.csv"}
    for p in good:
        heat = sitk.ReadImage(str(out / f"{p.name[:-5]}_integrated_gradients.nrrd"))
        assert heat.GetSize() == sitk.ReadImage(str(p)).GetSize()
    assert hidden(out) == []  # the dead worker's staging folder was removed at the end


class KillOnPoison(distributed.WorkerPlugin):
    """A worker plugin: a worker that reads an input named ``poison`` dies on the spot.

    Stands in for an input that takes its worker down every time (a decoder crash, memory
    exhaustion); the scheduler gives the plugin to the workers restarted after each death.
    """

    name = "xaiexplain-test-poison"

    def setup(self, worker):
        from XAIExplainLib.cli import reading

        real = reading.read_item

        def read_item(item):
            if item.stem == "poison":
                os._exit(1)
            return real(item)

        reading.read_item = read_item


@pytest.fixture(scope="module")
def one_worker():
    """A cluster of one worker process."""
    from XAIExplainLib.cli.cluster import start_local_cluster

    cluster, _ = start_local_cluster(1, ExplainSettings(model=MODEL, methods=("gradcam",),
                                                        device="cpu"))
    with cluster, distributed.Client(cluster) as connected:
        yield connected


@pytest.mark.parametrize("workers, order", [(2, "healthy-first"), (1, "poison-first")])
def test_an_input_that_kills_every_worker_is_reported_not_retried_forever(request, cohort,
                                                                         tmp_path, workers, order):
    """Only the poison is reported, also for the healthy inputs that waited behind it.

    Dask counts a worker's death against every input in that worker's queue, not only the one
    running. The flaky failure of issue 25 (the healthy input reported as killing its worker) was
    a healthy input queued behind the poison three times; on one worker with the poison first
    it is queued behind it every time, so this case failed on every run before the fix.
    """
    import cloudpickle

    from XAIExplainLib.cli.cluster import MAX_WORKER_DEATHS

    poison = tmp_path / "poison.nrrd"
    poison.write_bytes(cohort[0].read_bytes())
    inputs = [cohort[0], poison, cohort[1]] if order == "healthy-first" else [poison, cohort[0]]
    client = request.getfixturevalue("client" if workers == 2 else "one_worker")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import it
    client.register_plugin(KillOnPoison())
    errors, result = io.StringIO(), {}
    run = threading.Thread(target=lambda: result.update(summary=explain_cohort(
        MODEL, inputs, tmp_path / "out", ["gradcam"], client=client, stderr=errors)), daemon=True)
    try:
        run.start()
        run.join(timeout=900)  # a guard against a hang (a worker that never came back), not a timing
    finally:
        client.unregister_worker_plugin(KillOnPoison.name)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert not run.is_alive(), "the cohort did not finish: no worker came back after a death"
    summary = result["summary"]
    assert [r.status for r in summary.records] == ["ok" if p != poison else "failed" for p in inputs], \
        [r.error for r in summary.records]
    message = (f"{poison}: the worker explaining it died each time it was tried (killed, or out "
               "of memory); not retried further")
    assert summary.records[inputs.index(poison)].error == message
    assert errors.getvalue() == f"xaiexplain: error: {message}\n"
    assert client.cluster.scheduler.allowed_failures == MAX_WORKER_DEATHS
    assert hidden(tmp_path / "out") == []


def test_cli_on_a_local_cluster_stopped_with_sigterm_then_resumed(cohort, tmp_path):
    """The run is held (not timed) where SIGTERM must land: every input but ct0 waits in its
    worker before it is read, and never finishes (its worker exits when the test releases it),
    so exactly ct0 is complete when the signal arrives. Before, the test signalled when the
    first manifest appeared, and a busy machine let the workers finish more inputs, or all of
    them, first."""
    good = [p for p in cohort if p.name != "constant.nrrd"]
    out, release = tmp_path / "out", tmp_path / "release"
    hold_all_but_ct0 = f"""
        import contextlib, os, time
        import distributed
        from XAIExplainLib.cli import cluster

        class HoldAllButCt0(distributed.WorkerPlugin):
            name = "xaiexplain-test-hold"

            def setup(self, worker):
                from XAIExplainLib.cli import reading
                real = reading.read_item

                def read_item(item, *args, **kwargs):
                    if item.stem != "ct0":
                        while not os.path.exists({str(release)!r}):
                            time.sleep(0.05)
                        os._exit(1)  # a held input never completes
                    return real(item, *args, **kwargs)
                reading.read_item = read_item

        real_open = cluster.open_client

        @contextlib.contextmanager
        def open_client(*args, **kwargs):
            with real_open(*args, **kwargs) as (client, spec):
                client.register_plugin(HoldAllButCt0())
                yield client, spec
        cluster.open_client = open_client
    """
    args = ["explain", *good, "--model", MODEL, "--method", "integrated_gradients",
            "--cluster", "local:2", "--output-dir", out]
    process = cli_process(*args, script=hold_all_but_ct0)
    try:
        manifest = out / f"ct0{MANIFEST_ENDING}"
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing
        while not manifest.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        release.touch()  # any worker still held exits
    assert process.returncode == 130, stderr
    assert "xaiexplain: Dask cluster of 2 worker(s); dashboard at http://" in stderr
    done = {m.name[: -len(MANIFEST_ENDING)] for m in out.glob("*" + MANIFEST_ENDING)}
    assert done == {"ct0"}, "SIGTERM did not land after the first input"
    assert hidden(out) == []  # staging folders of the stopped workers removed
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()
              if p.name.split("_")[0] in done or p.name.split(".")[0] in done}

    again = cli_process(*args)
    stdout, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    for stem in sorted(done):
        assert f"{stem}.nrrd: skipped (complete from an earlier run)" in stderr
    assert f"({len(done)} complete from an earlier run)" in stdout
    rows = json.loads((out / "summary.json").read_text())["inputs"]
    assert [r["status"] for r in rows] == ["ok"] * len(good)
    assert {r["stem"] for r in rows if r["skipped"]} == done
    for name, stamp in stamps.items():
        assert (out / name).stat().st_mtime_ns == stamp, f"{name} was written again"
    assert hidden(out) == []
