"""End to end on a real CT: one pass gives the prediction and the maps (issue 10's one-pass targets).

Rows, interleaved round by round and reported as the median and the best round (the machine
is shared; the 2D rows last a fraction of a second):

- 3D (``lung-nodule-seg-3d`` over the whole lung1 CT, sliding windows):
  ``predict_image`` (plain prediction), the *floor* (on the same windows: one forward
  with the layer's output captured and one backward to the layer, nothing else), and
  ``explain_image`` with Grad-CAM at the card's layer. Target: the engine phase of
  ``explain_image`` within 1.15x of the floor.
- 2D (``lung-nodule-2d`` per slice over the same CT): ``predict_image`` and ``explain_image``
  with Grad-CAM at the card's layer and at the last block, and the engine phases on the
  prepared slices (``predict_volume``, the floor of forward + backward to the layer, and
  ``explain_volume(return_outputs=True)``, which gives the same outputs plus the maps).
  Target: within 1.15x of plain prediction. End to end, Grad-CAM also maps the heatmap back
  onto the input grid, which a classifier's prediction does not produce, and its backward
  runs from the output down to the layer (longer for a shallow layer).

    python -m bench.peers.end_to_end --data ../shared/data [--rounds 3] [--threads 1] [--rows 2d]

Prints a table and writes ``bench/results/end_to_end.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # bench/


def _floor(loaded, image) -> float:
    """Seconds of forward (layer captured) + backward to the layer over explain_image's own windows."""
    import torch

    from XAIExplainLib.engine import SegmentationTarget
    from XAIExplainLib.engine.capture import explaining, run_pass
    from XAIExplainLib.engine.layers import resolve_layers
    from XAIExplainLib.engine.volume import _DEFAULT_CPU_BATCH, _padded, _patch_shape, _window_target
    from XAIExplainLib.engine.windows import Tiling, window_grid

    prepared = loaded.pipeline.prepare(image)
    options = loaded.pipeline.volume_options()
    data = torch.from_numpy(prepared.array)
    patch = _patch_shape(options.get("patch_size"), tuple(data.shape[1:]))
    padded, _ = _padded(data, patch, Tiling())
    windows = window_grid(tuple(padded.shape[1:]), patch, options.get("overlap", 0.25))
    model = loaded.module
    layers = resolve_layers(model, loaded.card.target_layers.default, padded[None, :, :patch[0], :patch[1], :patch[2]])
    target = SegmentationTarget(1)
    started = time.perf_counter()
    with explaining(model):
        for start in range(0, len(windows), _DEFAULT_CPU_BATCH):
            part = windows[start:start + _DEFAULT_CPU_BATCH]
            batch = torch.stack([padded[(slice(None),) + w] for w in part])
            run_pass(model, batch, _window_target(target, part), layers, backward=True)
    return time.perf_counter() - started


def _timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def _rows_3d(image) -> dict:
    from XAIExplainLib.models import explain_image, load_model, predict_image

    seg = load_model("lung-nodule-seg-3d")
    out = {"3d predict_image": _timed(lambda: predict_image(seg, image, device="cpu"))[0],
           "3d floor (forward + backward to the layer)": _floor(seg, image)}
    seconds, result = _timed(lambda: explain_image(seg, image, methods=["gradcam"], target=1, device="cpu"))
    out["3d explain_image gradcam"] = seconds
    out["3d explain_image gradcam: engine phase"] = result.timings["explain"]
    return out


def _floor_2d(loaded, slices, layer: str) -> float:
    """Seconds of forward (layer captured) + backward to the layer over the engine's own slice batches."""
    import torch

    from XAIExplainLib.engine.capture import explaining, run_pass
    from XAIExplainLib.engine.layers import resolve_layers
    from XAIExplainLib.engine.volume import _DEFAULT_CPU_BATCH

    model = loaded.module
    data = torch.from_numpy(slices)[0][:, None]  # (slices, 1, Y, X)
    layers = resolve_layers(model, layer, data[:1])
    started = time.perf_counter()
    with explaining(model):
        for start in range(0, len(data), _DEFAULT_CPU_BATCH):
            run_pass(model, data[start:start + _DEFAULT_CPU_BATCH], None, layers, backward=True)
    return time.perf_counter() - started


def _rows_2d(image) -> dict:
    from XAIExplainLib.engine import explain_volume, predict_volume
    from XAIExplainLib.models import explain_image, load_model, predict_image

    clf = load_model("lung-nodule-2d")
    card_layer, last_block = clf.card.target_layers.default, "features.block4"
    out = {"2d predict_image": _timed(lambda: predict_image(clf, image, device="cpu"))[0]}
    for name, layer in ((f"card layer {card_layer}", card_layer), (f"last block {last_block}", last_block)):
        seconds, result = _timed(lambda: explain_image(clf, image, methods=["gradcam"], layer=layer, device="cpu"))
        out[f"2d explain_image gradcam, {name}"] = seconds
        out[f"2d   of which mapping back to the input grid, {name}"] = result.timings["postprocess"]
    slices = clf.pipeline.prepare(image, slice_axis=clf.card.slice_axis or 0).array
    out["2d engine: predict_volume"] = _timed(lambda: predict_volume(clf.module, slices, axis=0, device="cpu"))[0]
    out["2d engine: floor (forward + backward to the card layer)"] = _floor_2d(clf, slices, card_layer)
    out["2d engine: explain_volume gradcam + outputs, card layer"] = _timed(
        lambda: explain_volume(clf.module, slices, "gradcam", axis=0, layer=card_layer, return_outputs=True,
                               device="cpu"))[0]
    return out


_RATIOS = {
    "3d engine phase / floor": ("3d explain_image gradcam: engine phase", "3d floor (forward + backward to the layer)"),
    "3d explain_image / predict_image": ("3d explain_image gradcam", "3d predict_image"),
    "2d explain_image / predict_image, card layer": ("2d explain_image gradcam, card layer features.block2",
                                                     "2d predict_image"),
    "2d explain_image / predict_image, last block": ("2d explain_image gradcam, last block features.block4",
                                                     "2d predict_image"),
    "2d engine: explain_volume / floor": ("2d engine: explain_volume gradcam + outputs, card layer",
                                          "2d engine: floor (forward + backward to the card layer)"),
    "2d engine: floor / predict_volume": ("2d engine: floor (forward + backward to the card layer)",
                                          "2d engine: predict_volume"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.end_to_end", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with lung1_image.nrrd")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", choices=("all", "2d", "3d"), default="all")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "end_to_end.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import SimpleITK as sitk

    image = sitk.ReadImage(str(args.data / "lung1_image.nrrd"))
    parts = {"3d": [_rows_3d], "2d": [_rows_2d], "all": [_rows_3d, _rows_2d]}[args.rows]
    rounds = []
    for _ in range(args.rounds):
        row: dict = {}
        for part in parts:
            row.update(part(image))
        rounds.append(row)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    best = {key: min(r[key] for r in rounds) for key in rounds[0]}
    ratios = {name: {"median": median[a] / median[b], "best": best[a] / best[b]}
              for name, (a, b) in _RATIOS.items() if a in median}
    print(f"{'row':60s} {'median s':>9s} {'best s':>8s}")
    for key in median:
        print(f"{key:60s} {median[key]:9.3f} {best[key]:8.3f}")
    for key, value in ratios.items():
        print(f"{key:60s} {value['median']:8.2f}x {value['best']:7.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"median_seconds": median, "best_seconds": best, "ratios": ratios, "rounds": rounds,
                                    "threads": args.threads, "torch": torch.__version__,
                                    "python": platform.python_version()}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
