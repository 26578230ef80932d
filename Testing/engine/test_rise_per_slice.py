"""RISE over a volume's slices: each slice relative to its own mean score, and progress inside
long batches (issue 25 section 3). Progress is checked by counting callbacks, never by timing."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import XAIExplainLib as xai
from XAIExplainLib.engine.batching import chunks, copies_per_forward
from XAIExplainLib.engine.methods.rise import RiseMasks
from XAIExplainLib.engine import SegmentationTarget
from Testing.support.models import classifier, unet


def naive_relative_rise(model, x, masks: RiseMasks, count, target):
    """ReLU(sum_i (s_i - mean s) M_i) / (masks p), one forward per mask."""
    scores, stack = [], []
    with torch.no_grad():
        for i in range(count):
            mask = masks.batch(i, i + 1)[0]
            scores.append(torch.softmax(model(x * mask), dim=1).gather(1, target[:, None])[:, 0])
            stack.append(mask)
    s = torch.stack(scores)  # (count, N)
    m = torch.stack(stack)  # (count, *S)
    centred = s - s.mean(dim=0, keepdim=True)
    total = torch.einsum("cn,c...->n...", centred, m)
    return total.clamp(min=0) / (count * masks.p)


def test_score_baseline_mean_subtracts_each_samples_mean_score():
    model = classifier()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 1, 2])
    masks = RiseMasks((16, 16), 50, 4, 0.5, seed=5)
    mine = xai.explain(model, x, "rise", target=target, normalize=False, masks=50, cells=4, seed=5,
                       score_baseline="mean")
    torch.testing.assert_close(mine, naive_relative_rise(model, x, masks, 50, target), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="score_baseline must be one of 'none', 'mean'"):
        xai.explain(model, x, "rise", masks=5, score_baseline="median")


def test_rise_reports_progress_inside_a_batch_of_slices():
    model = classifier()
    volume = np.random.default_rng(0).standard_normal((4, 64, 64)).astype(np.float32)
    masks = 1000
    calls = []
    xai.explain_volume(model, volume, "rise", batch_size=4, target=0, masks=masks, cells=4,
                       progress=lambda done, total: calls.append((done, total)))
    step = copies_per_forward(4 * 64 * 64, masks)
    forwards = len(list(chunks(masks, step)))
    assert forwards > 4, "the test needs several forwards per batch"
    # one report per forward of masks, then the batch's own: before, the batch's only
    assert len(calls) == forwards + 1
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 4 and all(t == 4 for _, t in calls)


def test_explain_image_runs_rise_per_slice_relative_to_each_slices_mean_score():
    from XAIExplainLib.imaging.phantoms import chest_phantom

    model = xai.load_model("lung-nodule-2d", device="cpu")
    image = chest_phantom(seed=2, shape=(3, 160, 160), spacing=(5.0, 1.8, 1.8)).image()
    options = dict(methods="rise", target="nodule", device="cpu", normalize=False, masks=16, cells=4, seed=1)
    result = xai.explain_image(model, image, **options)
    plain = xai.explain_image(model, image, **options, score_baseline="none")
    reference = xai.explain_volume(model.module, result.prepared.array, "rise", target=1, normalize=False,
                                   masks=16, cells=4, seed=1, score_baseline="mean")
    expected = result.prepared.restore_map(reference, clamp=False)
    import SimpleITK as sitk

    np.testing.assert_allclose(sitk.GetArrayFromImage(result.maps["rise"]), sitk.GetArrayFromImage(expected),
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(sitk.GetArrayFromImage(plain.maps["rise"]), sitk.GetArrayFromImage(result.maps["rise"]))


def test_the_command_line_progress_gives_an_estimate_and_log_lines_every_few_seconds(monkeypatch):
    from XAIExplainLib.cli import progress as progress_module

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    shown = progress_module.Progress(1, stream=stream, interactive=False)
    shown.start(1, "lung1")
    for second in range(1, 21):  # 20 s of work, 5 % per second
        clock[0] = 100.0 + second
        shown.step(second / 20, "rise")
    lines = stream.getvalue().splitlines()[1:]
    assert len(lines) == 3  # at 5, 10 and 15 s (20 s is the end)
    assert lines[0] == "[1/1] lung1:  25% rise, ETA 0:15"
    assert lines[2] == "[1/1] lung1:  75% rise, ETA 0:05"
    terminal = io.StringIO()
    drawn = progress_module.Progress(1, stream=terminal, interactive=True)
    drawn.start(1, "lung1")
    clock[0] += 10.0
    drawn.step(0.5, "rise")
    assert "50% rise, ETA 0:10" in terminal.getvalue()


@pytest.mark.parametrize("method,options,count", [("integrated_gradients", {"steps": 48}, "steps"),
                                                  ("smoothgrad", {"samples": 48}, "samples"),
                                                  ("gradient_shap", {"samples": 48}, "samples")])
def test_sampling_methods_report_progress_inside_a_batch_too(method, options, count):
    model = classifier()
    volume = np.random.default_rng(0).standard_normal((1, 256, 256)).astype(np.float32)
    calls = []
    xai.explain_volume(model, volume, method, batch_size=1, target=0, **options,
                       progress=lambda done, total: calls.append(done))
    forwards = len(list(chunks(options[count], copies_per_forward(256 * 256, options[count]))))
    assert forwards > 1
    assert len(calls) == forwards + 1 and calls == sorted(calls) and calls[-1] == 1


@pytest.mark.parametrize("method,make,layer,options,copies", [
    ("scorecam", classifier, "features.2", {}, 12),  # one forward per channel of the layer
    ("ablationcam", classifier, "features.2", {}, 12),
    ("kwc", unet, "dec2.0", {"target": SegmentationTarget(1, region="all")}, 8),  # per kernel
    ("occlusion", classifier, None, {"window": 8, "stride": 8}, 4),  # per window of 16 x 16
], ids=lambda value: value if isinstance(value, str) else None)
def test_perturbation_methods_report_progress_inside_a_batch_too(method, make, layer, options, copies, monkeypatch):
    """One batch of two slices whose method needs one forward per copy (one copy fits a forward here): each
    forward reports how far the batch is, as RISE's masks do, so a batch that takes minutes is not silent."""
    monkeypatch.setattr("XAIExplainLib.engine.batching.ELEMENTS_PER_FORWARD", 1)
    volume = np.random.default_rng(0).standard_normal((2, 16, 16)).astype(np.float32)
    calls = []
    xai.explain_volume(make(2, seed=1), volume, method, batch_size=2, layer=layer, **options,
                       **({} if "target" in options else {"target": 0}),
                       progress=lambda done, total: calls.append((done, total)))
    # before: one report, at the end of the only batch
    expected = [2 * i / copies for i in range(copies)] + [2]
    np.testing.assert_allclose([done for done, _ in calls], expected)
    assert all(total == 2 for _, total in calls)
