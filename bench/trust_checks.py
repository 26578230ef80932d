"""What the trust checks of issue 20 (classes 4, 5, 6) cost on the normal path.

On a real CT (``lung1_image.nrrd``, cropped to the lung) with the bundled 3D segmenter
``lung-nodule-seg-3d`` (sliding windows):

- A/B rows, interleaved round by round: ``explain_image`` Grad-CAM with every check on, and
  with the per-run checks switched off (the NaN/Inf input check, the window-memory check, the
  batch-size check of every output, the pipeline seam checks); the ratio is the checks' cost.
- The checks one by one, in milliseconds: the input check on the whole (uncropped) CT, the
  window-memory probe, the seam checks, one output-row check, the inference copy's structure and
  hook key, the catalogue's file stamp, and at load the weights' dtype and overflow checks (next to
  the load itself).

    python -m bench.trust_checks --data ../shared/data [--rounds 5] [--threads 2]

Prints a table and writes ``bench/results/trust_checks.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _seconds(work, repeat: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - started) / repeat


@contextlib.contextmanager
def _checks_off():
    """The per-run checks replaced by no-ops (where each module looks its check up)."""
    from XAIExplainLib.engine import capture, inference_copy, reading, request, validation, volume
    from XAIExplainLib.models import pipeline

    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    rows = lambda *args: None  # noqa: E731
    for owner in (capture, inference_copy, reading, request):
        patch(owner, "check_output_rows", rows)
    patch(validation, "non_finite_problem", lambda *args, **kwargs: "")
    patch(volume, "non_finite_problem", lambda *args, **kwargs: "")
    patch(pipeline, "_check_windows", lambda *args, **kwargs: None)
    patch(pipeline, "check_prepared", lambda prepared, where: prepared)
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with lung1_image.nrrd")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import SimpleITK as sitk
    import torch

    from XAIExplainLib.engine.inference_copy import _foreign_hooks, _structure
    from XAIExplainLib.engine.validation import check_output_rows, non_finite_problem
    from XAIExplainLib.logic.model_catalogue import _model_files, _stamp
    from XAIExplainLib.models import explain_image, load_model
    from XAIExplainLib.models.pipeline_protocol import check_pipeline, check_prepared
    from XAIExplainLib.models.weight_integrity import check_finite_weights, check_weight_dtypes
    from XAIExplainLib.models.weights_io import read_state_dict
    from XAIExplainLib.models.working_memory import check_window_memory

    torch.set_num_threads(args.threads)
    full = sitk.ReadImage(str(args.data / "lung1_image.nrrd"))
    size = full.GetSize()
    image = full[3 * size[0] // 8: 5 * size[0] // 8, 3 * size[1] // 8: 5 * size[1] // 8, :min(size[2], 24)]
    model = load_model("lung-nodule-seg-3d")
    explain = lambda: explain_image(model, image, "gradcam", device="cpu")  # noqa: E731
    explain()  # warm up (allocator, oneDNN primitives)

    on, off = [], []
    for _ in range(args.rounds):
        on.append(_seconds(explain))
        with _checks_off():
            off.append(_seconds(explain))
    median_on, median_off = statistics.median(on), statistics.median(off)

    patch = model.pipeline.volume_options()["patch_size"]
    prepared = model.pipeline.prepare(image)
    weights = model.card.weights.file
    state = read_state_dict(weights)
    network_state = model.module.state_dict()
    files = _model_files(model)
    output = torch.zeros(16, 2, 8, 8, 8)
    from XAIExplainLib.models import working_memory

    float_ct = sitk.GetArrayFromImage(full).astype(np.float32)
    working_memory._ESTIMATES.clear()
    window_check = lambda: check_window_memory(model.module, 1, patch, "bench", None, torch.device("cpu"))  # noqa: E731
    parts = {
        "input NaN/Inf check, whole CT " + "x".join(map(str, size)) + " int16": _seconds(
            lambda: non_finite_problem(sitk.GetArrayViewFromImage(full)), 3),
        "input NaN/Inf check, the same as float32": _seconds(lambda: non_finite_problem(float_ct), 3),
        f"window-memory check, first (probe; patch {'x'.join(map(str, patch))})": _seconds(window_check),
        "window-memory check, again (kept per network)": _seconds(window_check, 100),
        "pipeline seam checks (pipeline + prepared)": _seconds(
            lambda: (check_pipeline(model.pipeline, "bench"), check_prepared(prepared, "bench")), 1000),
        "output batch-size check (per forward)": _seconds(lambda: check_output_rows(model.module, output, 16), 10000),
        "inference copy key: structure + hooks (per batch)": _seconds(
            lambda: (_structure(model.module), _foreign_hooks(model.module)), 100),
        f"catalogue file stamp ({len(files)} files, per lookup)": _seconds(lambda: _stamp(_model_files(model)), 100),
        "load: weights dtype + overflow checks": _seconds(
            lambda: (check_weight_dtypes(state, network_state, weights),
                     check_finite_weights(state, weights, network_state)), 10),
    }
    load_seconds = _seconds(lambda: load_model("lung-nodule-seg-3d"), 3)

    print(f"explain_image Grad-CAM, lung-nodule-seg-3d, lung1 crop {'x'.join(map(str, image.GetSize()))}, "
          f"{args.threads} threads, {args.rounds} rounds (median)")
    print(f"  checks on : {median_on:8.3f} s   (best {min(on):.3f})")
    print(f"  checks off: {median_off:8.3f} s   (best {min(off):.3f})")
    print(f"  ratio     : {median_on / median_off:8.3f}   (best/best {min(on) / min(off):.3f})")
    print("each check (ms; share of the explain_image median, load checks: of load_model)")
    for name, seconds in parts.items():
        base = load_seconds if name.startswith("load:") else median_on
        print(f"  {name:<58} {1e3 * seconds:9.3f} ms  {100 * seconds / base:6.2f} %")
    print(f"  {'load_model (for the load checks)':<58} {1e3 * load_seconds:9.3f} ms")

    result = {"machine": platform.platform(), "threads": args.threads, "rounds": args.rounds,
              "image_size": list(image.GetSize()), "explain_on_s": on, "explain_off_s": off,
              "ratio_median": median_on / median_off, "checks_ms": {k: 1e3 * v for k, v in parts.items()},
              "load_model_ms": 1e3 * load_seconds}
    out = HERE / "results" / "trust_checks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
