"""What the web page's user waits for: Apply -> heatmap drawn, beside the logic's own compute time,
and slice-scroll latency, in headless Chromium against ``xaiexplain serve``.

For lung1 (the shared data's real chest CT) with ``lung-nodule-2d`` and with the 3D segmenter
``lung-nodule-seg-3d`` (Grad-CAM at the card's layer):

* ``apply_to_drawn_s``: from the click on Apply to the first picture of the axial view, decoded
  in the browser, that shows heat colours (timed in the page, on the browser's clock);
* ``logic_compute_s`` / ``logic_publish_s``: the logic's own phases of that run (the page shows
  ``nodes.timings``), and ``logic_alone_s``: the same run by the logic in this process on a
  headless scene (no server, no browser);
* ``scroll_s``: arrow key on the axial slice slider -> the next picture of the axial view decoded
  in the browser (median and worst of ``--scrolls`` presses).

The server and the logic alone use the same number of torch threads (``--threads``). Prints a
table and writes bench/results/web_latency.json.

    python -m bench.web_latency --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("lung-nodule-2d", "lung-nodule-seg-3d")


def logic_alone(image_path: Path, model: str, method: str) -> dict:
    import SimpleITK as sitk

    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.mrml import create_headless_scene, release_headless_scene, sitk_to_volume

    scene = create_headless_scene(set_current=False)
    try:
        node = sitk_to_volume(scene, sitk.ReadImage(str(image_path)), image_path.stem)
        logic = XAIExplainLogic(scene=scene)
        logic.loadModel(model)
        started = time.perf_counter()
        nodes = logic.explainVolume(node, model, methods=[method])
        return {"logic_alone_s": time.perf_counter() - started, **{f"alone_{k}_s": v for k, v in nodes.timings.items()}}
    finally:
        release_headless_scene(scene)


#: records, in the page, when each new picture of the axial view has been decoded and how much of it
#: is in heat colours (saturated: the CT is grey), on the browser's own clock
FRAME_RECORDER = """
window.__frames = [];
const img = document.querySelectorAll('#views img.image-display-area')[0];
const canvas = document.createElement('canvas');
const ctx = canvas.getContext('2d', {willReadFrequently: true});
new MutationObserver(() => { img.decode().then(() => {
  const w = 200, h = Math.max(1, Math.round(200 * img.naturalHeight / img.naturalWidth));
  canvas.width = w; canvas.height = h; ctx.drawImage(img, 0, 0, w, h);
  const d = ctx.getImageData(0, 0, w, h).data; let hot = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40) hot++; }
  window.__frames.push([performance.now(), hot / (w * h)]);
}).catch(() => {}); }).observe(img, {attributes: true, attributeFilter: ['src']});
"""


def _first_frame_after(page, start: float, hot: float, seconds: float):
    from Testing.web.browser import wait_until

    def found():
        frames = page.driver.execute_script("return window.__frames")
        return next((t for t, share in frames if t > start and share > hot), None)

    return (wait_until(found, "a new picture of the axial view", seconds=seconds, every=0.02) - start) / 1000.0


def page_run(image_path: Path, model: str, method: str, scrolls: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from Testing.web.browser import Page, Served, open_browser, wait_until

    server = Served(image_path, "--model", model, "--method", method)
    driver = open_browser(1600, 860)
    try:
        page = Page(driver, server.url)
        page.wait_text("status", r"Loaded")
        wait_until(page.slice_views_ready, "the CT in the views")
        driver.execute_script(FRAME_RECORDER)
        start = driver.execute_script("const t = performance.now(); document.getElementById('apply').click(); "
                                      "return t;")
        drawn = _first_frame_after(page, start, 0.001, 1800)
        timings = json.loads(wait_until(lambda: page.text("timings"), "the run's timings", seconds=120))
        latencies = []
        for press in range(scrolls):
            key = "ArrowRight" if press % 2 == 0 else "ArrowLeft"
            start = driver.execute_script(
                "const thumb = document.querySelectorAll('#views .v-slider-thumb')[0]; thumb.focus(); "
                "const t = performance.now(); thumb.dispatchEvent(new KeyboardEvent('keydown', "
                f"{{key: '{key}', bubbles: true}})); return t;")
            latencies.append(_first_frame_after(page, start, -1.0, 120))
        return {"apply_to_drawn_s": drawn, "logic_compute_s": timings.get("compute"),
                "logic_publish_s": timings.get("publish"), "scroll_median_s": statistics.median(latencies),
                "scroll_worst_s": max(latencies)}
    finally:
        driver.quit()
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder with lung1_image.nrrd")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--scrolls", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the server and of the "
                                                               "logic alone (the same for both; default 1)")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits it; set before torch loads here
    import torch

    torch.set_num_threads(args.threads)
    image = args.data / "lung1_image.nrrd"
    if not image.is_file():
        parser.error(f"{image}: no such file")
    rows = []
    for model in args.models:
        row = {"model": model, "method": args.method}
        row.update(page_run(image, model, args.method, args.scrolls))
        row.update(logic_alone(image, model, args.method))
        rows.append(row)
    header = ("model", "Apply->drawn s", "logic compute s", "logic publish s", "logic alone s", "scroll median s",
              "scroll worst s")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(" | ".join([r["model"]] + [f"{r[k]:.2f}" for k in (
            "apply_to_drawn_s", "logic_compute_s", "logic_publish_s", "logic_alone_s", "scroll_median_s",
            "scroll_worst_s")]))
    out = HERE / "results" / "web_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"image": image.name, "threads": args.threads, "rows": rows, "host": {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}},
        indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
