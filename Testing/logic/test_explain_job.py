"""Background runs (logic.startExplainVolume -> ExplainJob) on a real MRML scene.

The model here blocks on a gate inside its forward, so the tests see the job
*while* the worker computes, without timing anything: start must come back with
the worker still blocked, the scene must be byte-for-byte the same until
``finish()``, every forward must be separated from the next by a progress update
(the engine's checkpoints), a cancel must stop the worker before its next
forward, and a worker's exception must come out of ``finish()``.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from Testing.support.slicer_scene import add_volume, box_volume, scene, scene_state  # noqa: F401

torch = pytest.importorskip("torch")
import slicer.util  # noqa: E402

from XAIExplainLib.engine import batching, interrupt  # noqa: E402
from XAIExplainLib.logic import ExplainCancelled, ExplainJob, XAIExplainLogic  # noqa: E402
from XAIExplainLib.logic import explain_job  # noqa: E402

CLASSES = ["dark", "bright"]
WAIT = 300.0  # a guard against a hang, not a timing (a loaded machine is slow); the tests never sleep


class GatedModel(torch.nn.Module):
    """Bright-spot classifier (4 channels at ``features``) whose forward can block or fail.

    ``forwards`` counts the worker thread's calls (checking the arguments on the main
    thread may run the model too); call number ``block_at`` sets ``blocked`` and waits
    for ``gate``; call number ``fail_at`` raises ``Boom``. ``seen`` records, per call,
    how many progress updates ``job`` had then.
    """

    def __init__(self, block_at=None, fail_at=None):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.features[0].bias.copy_(torch.tensor([0.0, -0.1, -0.2, -0.3]))
            self.fc.weight.copy_(torch.tensor([[-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]]))
            self.fc.bias.zero_()
        self.block_at, self.fail_at = block_at, fail_at
        self.gate, self.blocked = threading.Event(), threading.Event()
        self.forwards, self.seen, self.job = 0, [], None

    def forward(self, x):
        if threading.current_thread() is threading.main_thread():
            return self.fc(self.features(x).mean(dim=(2, 3)))
        self.forwards += 1
        self.seen.append(None if self.job is None else len(self.job.updates))
        if self.forwards == self.block_at:
            self.blocked.set()
            assert self.gate.wait(WAIT), "the test never opened the gate"
        if self.forwards == self.fail_at:
            raise Boom(f"forward {self.forwards} failed")
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Boom(RuntimeError):
    pass


def volume(scene):
    return add_volume(box_volume(), name="CT")


def start(logic, node, model, methods=("scorecam",)):
    return logic.startExplainVolume(node, model, methods=list(methods), classNames=CLASSES, mode="axial",
                                    layer="features", target="bright")


@pytest.fixture
def one_copy_per_forward(monkeypatch):
    """Score-CAM's masked forwards one channel at a time, and a heartbeat at every checkpoint."""
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 1)
    monkeypatch.setattr(explain_job, "HEARTBEAT_INTERVAL", 0.0)


def test_start_returns_while_the_worker_computes_and_the_scene_is_untouched_until_finish(scene):
    node = volume(scene)
    logic = XAIExplainLogic()
    model = GatedModel(block_at=1)
    flags = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]
    before = scene_state(scene)
    job = start(logic, node, model)
    assert isinstance(job, ExplainJob)
    assert model.blocked.wait(WAIT)
    # start came back while the worker is blocked inside the model's first forward
    assert not job.done and logic.isRunning and scene_state(scene) == before
    fraction, message = job.progress
    assert 0.0 <= fraction < 1.0 and "CT" in message
    with pytest.raises(RuntimeError, match="still computing"):
        job.finish()
    with pytest.raises(RuntimeError, match="already running"):
        start(logic, node, GatedModel())
    model.gate.set()
    assert job.wait(WAIT) and job.done
    assert scene_state(scene) == before  # computed, not yet published
    assert scene.GetNumberOfNodes() == len(before[0])
    nodes = job.finish()
    heatmap = nodes.heatmaps["scorecam"]
    assert scene.GetNodeByID(heatmap.GetID()) is heatmap
    values = slicer.util.arrayFromVolume(heatmap)
    assert box_volume()[np.unravel_index(np.argmax(values), values.shape)] > 0
    assert job.progress == (1.0, f"Done: {len(nodes)} output node(s)")
    assert [f for _, f, _ in job.updates] == sorted(f for _, f, _ in job.updates)
    assert not logic.isRunning
    assert flags == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]


def test_a_finished_job_cannot_publish_twice(scene):
    node = volume(scene)
    job = start(XAIExplainLogic(), node, GatedModel(), methods=["gradcam"])
    assert job.wait(WAIT)
    nodes = job.finish()
    after = scene_state(scene)
    with pytest.raises(RuntimeError, match="already been finished"):
        job.finish()
    assert scene_state(scene) == after and list(nodes.heatmaps) == ["gradcam"]


@pytest.mark.parametrize("methods", [["scorecam"], ["occlusion"], ["smoothgrad"], ["integrated_gradients"]])
def test_progress_updates_come_between_the_forwards_of_every_long_loop(scene, one_copy_per_forward, methods):
    """The longest wait between progress updates is one or two forwards of the model, inside every method's loop."""
    node = volume(scene)
    model = GatedModel(block_at=1)
    options = {"window": [6, 6], "stride": [6, 6]} if methods == ["occlusion"] else {}
    if methods in (["smoothgrad"], ["integrated_gradients"]):
        options = {"samples": 4} if methods == ["smoothgrad"] else {"steps": 4}
    job = XAIExplainLogic().startExplainVolume(node, model, methods=methods, classNames=CLASSES, mode="axial",
                                               target="bright", engineOptions=options or None)
    assert model.blocked.wait(WAIT)
    model.job = job
    model.gate.set()
    assert job.wait(WAIT)
    job.finish()
    counts = model.seen[1:]
    assert len(counts) >= 4, f"too few forwards to check ({len(counts)})"
    # at most two forwards in a row without an update (a loop step, plus a method's one closing
    # forward such as Integrated Gradients' baseline score)
    runs = [sum(1 for c in counts if c == value) for value in set(counts)]
    assert max(runs) <= 2, f"forwards without a progress update between them: {counts}"
    assert len(set(counts)) >= len(counts) - 1


def test_cancel_stops_the_worker_before_its_next_forward_and_changes_nothing(scene, one_copy_per_forward):
    node = volume(scene)
    logic = XAIExplainLogic()
    model = GatedModel(block_at=2)  # the first of Score-CAM's masked forwards (4 follow one by one)
    model.features[0].weight.requires_grad_(False)
    flags = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]
    before = scene_state(scene)
    job = start(logic, node, model)
    assert model.blocked.wait(WAIT)
    job.cancel()
    model.gate.set()
    assert job.wait(WAIT)
    assert model.forwards == 2, "the worker ran on after the cancel"
    with pytest.raises(ExplainCancelled, match="unchanged"):
        job.finish()
    assert scene_state(scene) == before and not logic.isRunning
    assert flags == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]


def test_logic_cancel_reaches_the_job_and_the_logic_runs_again(scene):
    node = volume(scene)
    logic = XAIExplainLogic()
    model = GatedModel(block_at=1)
    job = start(logic, node, model, methods=["gradcam"])
    assert model.blocked.wait(WAIT)
    logic.cancel()
    model.gate.set()
    assert job.wait(WAIT) and job.cancelled
    with pytest.raises(ExplainCancelled):
        job.finish()
    assert start(logic, node, GatedModel(), methods=["gradcam"]).wait(WAIT)
    assert logic.currentJob.finish().heatmaps["gradcam"]


def test_an_exception_in_the_worker_surfaces_from_finish(scene):
    node = volume(scene)
    logic = XAIExplainLogic()
    before = scene_state(scene)
    job = start(logic, node, GatedModel(fail_at=1), methods=["gradcam"])
    assert job.wait(WAIT)
    with pytest.raises(Boom, match="forward 1 failed"):
        job.finish()
    assert scene_state(scene) == before and not logic.isRunning
    with pytest.raises(RuntimeError, match="already been finished"):
        job.finish()


def test_a_cuda_out_of_memory_error_becomes_a_clear_message(scene):
    node = volume(scene)

    class OutOfMemory(GatedModel):
        def forward(self, x):
            if threading.current_thread() is threading.main_thread():
                return super().forward(x)  # checking the arguments may run the model
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    job = start(XAIExplainLogic(), node, OutOfMemory(), methods=["gradcam"])
    assert job.wait(WAIT)
    with pytest.raises(RuntimeError, match="Choose the CPU as device, a layer nearer the output") as caught:
        job.finish()
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)


def test_bad_arguments_raise_from_start_and_nothing_runs(scene):
    node = volume(scene)
    logic = XAIExplainLogic()
    model = GatedModel()
    with pytest.raises(ValueError, match="unknown method"):
        logic.startExplainVolume(node, model, methods=["nope"], classNames=CLASSES)
    assert not logic.isRunning and model.forwards == 0


def test_checkpoint_calls_the_callback_of_its_own_thread_only():
    calls = {"main": 0, "other": 0}
    with interrupt.checkpoints(lambda: calls.__setitem__("main", calls["main"] + 1)):
        interrupt.checkpoint()
        worker = threading.Thread(target=interrupt.checkpoint)  # a fresh thread has no callback
        worker.start()
        worker.join()
        with interrupt.checkpoints(lambda: calls.__setitem__("other", calls["other"] + 1)):
            interrupt.checkpoint()
        interrupt.checkpoint()
    interrupt.checkpoint()  # none installed: nothing happens
    assert calls == {"main": 2, "other": 1}
    with pytest.raises(TypeError, match="callable"):
        with interrupt.checkpoints(3):
            pass


def test_a_progress_callback_given_at_start_is_called_on_the_main_thread_only(scene):
    node = volume(scene)
    calls = []

    def progress(fraction, message):
        calls.append((threading.current_thread() is threading.main_thread(), fraction, message))

    job = XAIExplainLogic().startExplainVolume(node, GatedModel(), methods=["gradcam"], classNames=CLASSES,
                                               mode="axial", progress=progress)
    assert job.wait(WAIT)
    assert calls == []  # the worker never calls it
    nodes = job.finish()
    assert calls and all(main for main, _, _ in calls)
    assert calls[-1][1:] == (1.0, f"Done: {len(nodes)} output node(s)")
    assert any(message.startswith("Writing gradcam") for _, _, message in calls)
