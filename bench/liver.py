"""pyliverlesionseg's liver network (liver-seg-3d): speed, the Keras proof at full size, the README picture.

    python bench/liver.py                                   # table + bench/results/liver.json
    python bench/liver.py --verify WHEEL --data ../shared/data   # port vs their Keras graph, full segments
    python bench/liver.py --data ../shared/data --picture Resources/Screenshots/liver-seg-lung1.png

Speed rows, side by side on one abdominal-sized CT (512 x 512 x 120, 0.78 x 0.78 x 2.5 mm, the
abdominal phantom): load (with the card's dry run), their preprocessing (zoom to 1.5 mm, median
filter, zoom to 3 mm, the segment: the card's ``input.resampling``) beside one linear resampling,
prediction, Grad-CAM of the liver class end to end (one pass gives prediction and map), and the
floor under both (the network alone on the 189 x 162 x 162 segment: forward in inference mode,
forward + backward to the layer); each row runs in a fresh process and reports that process's
peak resident memory.

``--verify`` needs Keras 3 and h5py (``pip install -c Testing/constraints-cpu.txt keras h5py``,
``KERAS_BACKEND=torch``) and the wheel
(``pip download --no-deps --python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3``): it
builds their network with their own ``create_unet_like_model`` at the sizes their prediction
code uses (liver: 163 x 136 x 136 output; lesion: 92 x 84 x 42), loads the original HDF5 with
Keras and compares the probabilities with the bundled torch port on segments of real CT.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NAME = "liver-seg-3d"
SHAPE = (120, 512, 512)
SPACING = (2.5, 0.78, 0.78)


def _volume():
    from XAIExplainLib.imaging.phantoms import abdominal_phantom

    return abdominal_phantom(seed=7, phase="portal_venous", shape=SHAPE, spacing=SPACING, supersample=1).image()


def _row(stage: str, threads: int, device: str, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    from XAIExplainLib.models import explain_image, load_model, predict_image

    if stage in LESION_STAGES:
        queue.put(_lesion_row(stage, device))
        return
    image = _volume() if stage in ("predict", "gradcam", "preprocess", "preprocess_linear") else None
    start = time.perf_counter()
    model = load_model(NAME, check=(stage == "load"), device=device)
    seconds = time.perf_counter() - start
    extra = {}
    if stage in ("preprocess", "preprocess_linear"):
        import dataclasses

        from XAIExplainLib.models.card_steps import ResamplingSpec
        from XAIExplainLib.models.preprocessing import prepare

        card = model.card
        if stage == "preprocess_linear":
            card = dataclasses.replace(card, input=dataclasses.replace(card.input, resampling=ResamplingSpec()))
        start = time.perf_counter()
        prepare(card, image)
        seconds = time.perf_counter() - start
    elif stage == "predict":
        start = time.perf_counter()
        labels = predict_image(model, image, device=device)
        seconds = time.perf_counter() - start
        extra["liver_voxels"] = int(np.count_nonzero(__import__("SimpleITK").GetArrayViewFromImage(labels)))
    elif stage == "gradcam":
        start = time.perf_counter()
        result = explain_image(model, image, methods=["gradcam"], target="liver", device=device)
        seconds = time.perf_counter() - start
        extra["timings"] = {k: round(v, 2) for k, v in result.timings.items()}
    elif stage in ("forward", "forward_backward"):
        net = model.module.to(device)
        x = torch.zeros((1, 1) + tuple(model.card.input.size), device=device)
        if stage == "forward":
            start = time.perf_counter()
            with torch.inference_mode():
                net(x)
        else:
            layer = net.get_submodule(model.card.target_layers.default)
            captured = {}

            def capture(_module, _inputs, output):  # the engine's lean capture: no graph below the layer
                captured["a"] = output.detach().requires_grad_()
                return captured["a"]

            hook = layer.register_forward_hook(capture)
            for p in net.parameters():
                p.requires_grad_(False)
            start = time.perf_counter()
            y = net(x)
            torch.autograd.grad(y[:, 1].sum(), captured["a"])
            hook.remove()
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    queue.put({"stage": stage, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb), **extra})


def _lesion_row(stage: str, device: str) -> dict:
    """liver-lesion-seg-3d's network alone on the phantom's dilated liver (its true liver mask, so the liver
    network's time is not counted twice): their tiles (the card's input.windows) or the engine's sliding
    windows of the same patch on the box grown to it (the card without input.windows)."""
    import dataclasses

    from XAIExplainLib.engine.devices import resolve_device
    from XAIExplainLib.imaging.phantoms import abdominal_phantom
    from XAIExplainLib.models import load_model
    from XAIExplainLib.models.card_steps import WindowsSpec
    from XAIExplainLib.models.pipeline import run_networks
    from XAIExplainLib.models.preprocessing import CardPipeline

    phantom = abdominal_phantom(seed=7, phase="portal_venous", shape=SHAPE, spacing=SPACING, supersample=1)
    model = load_model("liver-lesion-seg-3d", device=device)
    if stage == "lesion_sliding":
        card = dataclasses.replace(model.card, input=dataclasses.replace(model.card.input, windows=WindowsSpec()))
        model.card, model.pipeline = card, CardPipeline(card)
    prepared = model.pipeline.prepare(phantom.image(), region=phantom.mask("liver"), modality="CT")
    start = time.perf_counter()
    _, logits = run_networks(model, prepared.array, "volume", None, resolve_device(device), None, None)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"stage": stage, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb),
            "model_grid": list(prepared.array.shape[1:]), "lesion_voxels": int((logits[0, 1] > logits[0, 0]).sum())}


LESION_STAGES = ("lesion_tiles", "lesion_sliding")
STAGES = ("load", "preprocess", "preprocess_linear", "forward", "forward_backward", "predict", "gradcam") + LESION_STAGES


def measure(threads: int, device: str, stages=STAGES) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    rows = []
    for stage in stages:
        queue = context.Queue()
        process = context.Process(target=_row, args=(stage, threads, device, queue))
        process.start()
        process.join()
        if process.exitcode != 0 or queue.empty():
            raise RuntimeError(f"the {stage!r} row failed (exit code {process.exitcode}); see its traceback above")
        row = queue.get()
        print(f"  {row}", flush=True)
        rows.append(row)
    return rows


def verify(wheel: Path, data: Path) -> list[dict]:
    """Their Keras graph vs the bundled port on full-size segments of lung1 (their RAS order)."""
    import zipfile

    import torch

    os.environ.setdefault("KERAS_BACKEND", "torch")
    from XAIExplainLib.models import load_model
    from XAIExplainLib.models.training import convert_liver
    from XAIExplainLib.models.training.liver_keras import build_keras_model, keras_probabilities

    rows = []
    for name, spec in convert_liver.MODELS.items():
        loaded = load_model(name, check=False)
        size = loaded.module.input_size
        hu = convert_liver.reference_patch(data / "lung1_image.nrrd", size)
        x = convert_liver.normalise_ct(hu)
        with tempfile.TemporaryDirectory() as folder:
            hdf5 = Path(folder) / f"{name}-original.h5"
            with zipfile.ZipFile(wheel) as archive:
                hdf5.write_bytes(archive.read(f"pyliverlesionseg/trained_models/{spec['hdf5']}"))
            start = time.perf_counter()
            model = build_keras_model(wheel, spec["network"], spec["output_size"], hdf5)
            expected = keras_probabilities(model, x)
            keras_s = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            ours = torch.sigmoid(loaded.module.network(torch.from_numpy(x)[None, None]))[0, 0].numpy()
        torch_s = time.perf_counter() - start
        row = {"model": name, "input_xyz": list(size), "output_xyz": list(expected.shape),
               "max_abs_diff": float(np.abs(ours - expected).max()),
               "mean_abs_diff": float(np.abs(ours - expected).mean()),
               "voxels_p_gt_0.5_keras": int((expected > 0.5).sum()), "voxels_p_gt_0.5_torch": int((ours > 0.5).sum()),
               "keras_build_predict_s": round(keras_s, 1), "torch_forward_s": round(torch_s, 1)}
        print(f"  {row}", flush=True)
        rows.append(row)
    return rows


def picture(data: Path, path: Path) -> dict:
    """Prediction (outline) and Grad-CAM of the liver class on lung1, through the logic, in the three views.

    The views go through the centre of the predicted liver in lung1's lowest 8 slices (the dome), else
    through the centre of the whole prediction.
    """
    import SimpleITK as sitk

    from XAIExplainLib import mrml
    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.models import load_model

    image = sitk.ReadImage(str(data / "lung1_image.nrrd"))
    scene = mrml.create_headless_scene(set_current=True)
    try:
        node = mrml.sitk_to_volume(scene, image, "lung1 CT")
        display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(400.0, 40.0)
        nodes = XAIExplainLogic().explainVolume(node, load_model(NAME), methods=["gradcam"], target="liver",
                                                device="cpu")
        segmentation = nodes.prediction
        segment = segmentation.GetSegmentation().GetNthSegmentID(0)
        liver = mrml.labels.segment_mask(segmentation, segment, node).astype(bool)
        label = mrml.labels.write_labelmap(scene, liver, node, "lung1 liver (prediction)")
        mrml.display.configure_label_display(label, scene=scene)
        mrml.display.show_in_slice_views(scene, label=label)
        low = np.argwhere(liver[:8])
        anywhere = np.argwhere(liver)  # none in the dome slices: through the centre of what it predicts
        centre = (low.mean(axis=0) if len(low) else anywhere.mean(axis=0) if len(anywhere)
                  else np.array(liver.shape) / 2.0)
        through = mrml.geometry.voxel_to_ras(mrml.node_ijk_to_ras(node), centre[::-1].astype(float))
        montage = mrml.render_montage(scene, through=through, size=(360, 360))
        mrml.save_png(montage, path)
        per_slice = [int(n) for n in liver.reshape(liver.shape[0], -1).sum(axis=1)]
        return {"through_zyx": centre.round(1).tolist(), "liver_voxels_per_slice": per_slice,
                "liver_ml": float(liver.sum() * np.prod(image.GetSpacing()) / 1000.0)}
    finally:
        mrml.release_headless_scene(scene)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder with lung1_image.nrrd (for --verify and --picture)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--verify", type=Path, metavar="WHEEL", help="compare with their Keras graph and stop")
    parser.add_argument("--picture", type=Path, help="write the README picture here and stop")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="rows to run")
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/liver.json)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.picture is not None:
        print(picture(args.data, args.picture))
        print(f"wrote {args.picture}")
        return
    out = args.out or HERE / "results" / ("liver_verify.json" if args.verify else "liver.json")
    if args.verify is not None:
        rows = verify(args.verify, args.data)
        print("port vs Keras (their create_unet_like_model + original HDF5), real CT segments of lung1")
        print(f"{'model':<22} {'input x,y,z':>14} {'output x,y,z':>14} {'max |dp|':>10} {'mean |dp|':>10}")
        for r in rows:
            print(f"{r['model']:<22} {','.join(map(str, r['input_xyz'])):>14} {','.join(map(str, r['output_xyz'])):>14} "
                  f"{r['max_abs_diff']:>10.2e} {r['mean_abs_diff']:>10.2e}")
    else:
        rows = measure(args.threads, args.device, args.stages)
        by = {r["stage"]: r for r in rows}
        print(f"{NAME} on a {' x '.join(map(str, SHAPE[::-1]))} CT ({args.device}, {args.threads} threads)")
        print(f"{'stage':<34} {'seconds':>8} {'peak RSS MB':>12}")
        labels = {"load": "load (+ dry run, smallest input)", "forward": "network forward (inference mode)",
                  "preprocess": "their preprocessing (card)", "preprocess_linear": "one linear resampling",
                  "forward_backward": "network forward + backward to layer", "predict": "predict_image (end to end)",
                  "gradcam": "Grad-CAM explain_image (end to end)",
                  "lesion_tiles": "lesion net, their tiles (card)", "lesion_sliding": "lesion net, sliding windows"}
        for r in rows:
            print(f"{labels[r['stage']]:<34} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12}")
        if set(LESION_STAGES) <= set(by):
            print(f"lesion: their tiles / sliding windows: "
                  f"{by['lesion_tiles']['seconds'] / by['lesion_sliding']['seconds']:.2f} "
                  f"(grids {by['lesion_tiles']['model_grid']} and {by['lesion_sliding']['model_grid']})")
        if {"gradcam", "predict", "forward_backward"} <= set(by):
            print(f"Grad-CAM / predict: {by['gradcam']['seconds'] / by['predict']['seconds']:.2f}; "
                  f"Grad-CAM / (forward + backward floor): "
                  f"{by['gradcam']['seconds'] / by['forward_backward']['seconds']:.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                               "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
