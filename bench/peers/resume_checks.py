"""What the output folder's safety checks cost per input, beside the work they guard.

Issue 20 (class 3) added, per input: the input's identity (stat + SHA-256 of its
first and last MiB, or of each DICOM slice's first 64 KiB), the manifest read
back with a size limit and every listed name checked, and discovery reading the
manifests of an input folder.  This times each of them on a CT-sized file and
beside one in-process explanation of a small volume, so the table says whether
they slow the normal path measurably.  Prints a table and writes
``bench/results/resume_checks.json``.

    python -m bench.peers.resume_checks
    python -m bench.peers.resume_checks --shape 300 512 512 --repeat 50
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 512, 512], metavar=("Z", "Y", "X"),
                        help="the CT whose identity is hashed (int16)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "resume_checks.json"))
    args = parser.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from XAIExplainLib.cli.cohort import explain_cohort
    from XAIExplainLib.cli.discovery import InputItem, discover
    from XAIExplainLib.cli.identity import input_identity
    from XAIExplainLib.cli.manifest import read_manifest, resume_state
    from XAIExplainLib.imaging.phantoms import chest_phantom

    rows = []
    with tempfile.TemporaryDirectory(prefix="xaiexplain-bench-resume-") as tmp:
        tmp = Path(tmp)
        ct = tmp / "ct.nrrd"
        array = np.random.default_rng(0).integers(-1000, 1000, args.shape, dtype=np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(ct), False)
        item = InputItem(str(ct), ct, "ct")
        rows.append({"row": f"input identity, {ct.stat().st_size / 2**20:.0f} MiB NRRD",
                     "ms": _median_ms(lambda: input_identity(item), args.repeat)})

        scans = tmp / "scans"
        scans.mkdir()
        for seed in range(4):
            sitk.WriteImage(chest_phantom(seed=seed, shape=(16, 96, 96), spacing=(5.0, 4.0, 4.0)).image(),
                            str(scans / f"ct{seed}.nrrd"))
        began = time.perf_counter()
        summary = explain_cohort("ct-phase-2d", [scans], scans, ["gradcam"], device="cpu",
                                 stderr=io.StringIO())
        per_input_ms = (time.perf_counter() - began) * 1000.0 / len(summary.records)
        first = InputItem(str(scans / "ct0.nrrd"), scans / "ct0.nrrd", "ct0")
        fingerprint = json.loads((scans / "ct0.xaiexplain.json").read_text())["fingerprint"]
        rows.append({"row": "manifest read and checked", "ms": _median_ms(
            lambda: read_manifest(scans, "ct0"), args.repeat)})
        rows.append({"row": "resume check (manifest + identity)", "ms": _median_ms(
            lambda: resume_state(scans, "ct0", fingerprint, input_identity(first)), args.repeat)})
        rows.append({"row": "discovery of a folder of 4 scans + their outputs", "ms": _median_ms(
            lambda: discover([str(scans)], output_dir=scans, notes=[]), args.repeat)})
        rows.append({"row": "one input explained (16 x 96 x 96, gradcam, CPU)", "ms": per_input_ms})
    for row in rows:
        row["share_of_one_input"] = row["ms"] / per_input_ms
    print(f"{'check':<52} {'ms':>9} {'x one input':>12}")
    print("-" * 75)
    for row in rows:
        print(f"{row['row']:<52} {row['ms']:>9.2f} {row['share_of_one_input']:>12.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"shape": args.shape, "repeat": args.repeat, "rows": rows,
                               "platform": platform.platform(), "python": platform.python_version(),
                               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2)
                   + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
