"""MONAI bundle benchmark: the bundle's own workflow against XAIExplain's bundle pipeline on one CT-like image.

A bundle (MONAI UNet, LoadImaged / Orientationd / Spacingd / ScaleIntensityRanged,
SlidingWindowInferer, Activationsd / Invertd / AsDiscreted) is written to a temporary
folder. Rows, each the median of ``--rounds`` runs on the same image:

- MONAI workflow: preprocessing, the inferer and the postprocessing, as the bundle runs them;
- xaiexplain prediction: prepare, predict_volume with the inferer's windows and weights, restore_labels;
- xaiexplain prediction + Grad-CAM: one explain_volume pass for maps and outputs, labels and map restored.

Also prints the fraction of voxels where the labels agree. Writes JSON to bench/results/.

    python -m bench.peers.monai_bundle [--size 160 160 80] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # bench/
NETWORK = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
           "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def _config(roi: int) -> dict:
    return {
        "network_def": NETWORK,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 200, "b_min": 0.0,
             "b_max": 1.0, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [roi] * 3, "sw_batch_size": 4,
                    "overlap": 0.5, "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]},
    }


def _write_bundle(folder: Path, roi: int) -> Path:
    import torch
    from monai.networks.nets import UNet
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(_config(roi)))
    metadata = {"name": "bench-bundle", "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1}},
        "outputs": {"pred": {"type": "image", "num_channels": 2, "channel_def": {"0": "background", "1": "organ"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    torch.manual_seed(0)
    torch.save(UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"}).state_dict(),
               folder / "models" / "model.pt")
    return folder


def _image(size):
    import numpy as np
    import SimpleITK as sitk
    rng = np.random.default_rng(0)
    x, y, z = size
    zz, yy, xx = np.mgrid[:z, :y, :x]
    array = (-50 + 220 * np.exp(-(((xx - x / 2) / (x / 6)) ** 2 + ((yy - y / 2) / (y / 5)) ** 2
                                  + ((zz - z / 2) / (z / 5)) ** 2)) + 10 * rng.standard_normal((z, y, x)))
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((0.9, 0.9, 2.5))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0, s, c, 0, 0, 0, -1))
    return image


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[160, 160, 80], help="image size x y z (voxels)")
    parser.add_argument("--roi", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "monai_bundle.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import SimpleITK as sitk
    import torch
    from monai.bundle import ConfigParser

    from XAIExplainLib.engine import explain_volume, predict_volume
    from XAIExplainLib.models.monai_bundle import load_bundle

    torch.set_num_threads(args.threads)
    image = _image(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _write_bundle(Path(tmp) / "bundle", args.roi)
        loaded = load_bundle(bundle, trust=True)
        pipeline = loaded.pipeline
        options = pipeline.volume_options()
        reference = ConfigParser()
        reference.read_config(str(bundle / "configs" / "inference.json"))
        pre, inferer, post = (reference.get_parsed_content(k) for k in ("preprocessing", "inferer", "postprocessing"))
        path = str(Path(tmp) / "image.nii.gz")
        sitk.WriteImage(image, path)

        def monai_workflow():
            data = pre({"image": path})
            with torch.inference_mode():
                data["pred"] = inferer(data["image"][None], loaded.module)[0]
            return np.transpose(post(data)["pred"][0].numpy(), (2, 1, 0))

        def ours_prediction():
            prepared = pipeline.prepare(image)
            logits = predict_volume(loaded.module, prepared.array, mode="volume", **options)
            return sitk.GetArrayFromImage(prepared.restore_labels(loaded.activate(logits, axis=0)))

        def ours_with_gradcam():
            prepared = pipeline.prepare(image)
            gradcam, logits = explain_volume(loaded.module, prepared.array, "gradcam", mode="volume", target=1,
                                             return_outputs=True, **options)
            prepared.restore_map(gradcam)
            return sitk.GetArrayFromImage(prepared.restore_labels(loaded.activate(logits, axis=0)))

        rows, labels = {}, {}
        for name, run in (("MONAI bundle workflow", monai_workflow), ("xaiexplain prediction", ours_prediction),
                          ("xaiexplain prediction + Grad-CAM", ours_with_gradcam)):
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                labels[name] = run()
                times.append(time.perf_counter() - start)
            rows[name] = {"seconds": statistics.median(times), "all_seconds": times}
    base = labels["MONAI bundle workflow"]
    for name in rows:
        rows[name]["label_agreement"] = float((labels[name] == base).mean())
    print(f"image {args.size} voxels, roi {args.roi}, {args.threads} thread(s), median of {args.rounds}")
    print(f"{'row':36s} {'seconds':>8s} {'x MONAI':>8s} {'agreement':>10s}")
    for name, row in rows.items():
        ratio = row["seconds"] / rows["MONAI bundle workflow"]["seconds"]
        print(f"{name:36s} {row['seconds']:8.2f} {ratio:8.2f} {row['label_agreement']:10.4f}")
    result = {"size": args.size, "roi": args.roi, "threads": args.threads, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
