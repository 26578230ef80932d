"""Cohort throughput: in-process against a Dask LocalCluster of 1 and 2 workers, in one run.

The same generated cohort is explained three ways into fresh folders:

* in-process (``xaiexplain explain`` without ``--cluster``), torch on every core;
* ``--cluster local:1``: one worker process with every core, so the
  difference to in-process is the cluster path's own cost (submitting,
  the worker loading the model, results coming back);
* ``--cluster local:2``: two workers with half the cores each.

Starting the cluster is timed apart from the cohort, so the table shows the
steady throughput and what a run pays once.  The rows run interleaved in
rounds and the table shows each row's median.  Every run's files are checked
to be byte-identical to the in-process ones.  Prints a table and writes
``bench/results/cohort.json``.

    python -m bench.peers.cohort                    # 12 volumes of 16 x 96 x 96
    python -m bench.peers.cohort --volumes 24 --methods gradcam integrated_gradients
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_cohort(folder: Path, count: int, shape: tuple[int, int, int]) -> list[Path]:
    import SimpleITK as sitk

    from XAIExplainLib.imaging.phantoms import chest_phantom

    paths = []
    for seed in range(count):
        path = folder / f"ct{seed:03d}.nrrd"
        sitk.WriteImage(chest_phantom(seed=seed, shape=shape, spacing=(5.0, 4.0, 4.0)).image(),
                        str(path))
        paths.append(path)
    return paths


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.suffix in (".nrrd", ".csv")
                   and not p.name.startswith("summary"))
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names) and names == sorted(
        p.name for p in b.iterdir() if p.suffix in (".nrrd", ".csv")
        and not p.name.startswith("summary"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ct-phase-2d")
    parser.add_argument("--methods", nargs="+", default=["gradcam", "integrated_gradients"])
    parser.add_argument("--volumes", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 96, 96], metavar=("Z", "Y", "X"))
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds of the three rows; the table shows medians")
    parser.add_argument("--out", default=str(RESULTS / "cohort.json"))
    args = parser.parse_args()

    import torch
    from distributed import Client

    from XAIExplainLib.cli.cluster import cpu_cores, start_local_cluster
    from XAIExplainLib.cli.cohort import explain_cohort
    from XAIExplainLib.cli.run_plan import ExplainSettings

    cores = cpu_cores()
    torch.set_num_threads(cores)
    runs: dict[str, list[dict]] = {"in-process": [], "--cluster local:1": [],
                                   "--cluster local:2": []}
    with tempfile.TemporaryDirectory(prefix="xaiexplain-bench-cohort-") as tmp:
        tmp = Path(tmp)
        inputs = make_cohort(tmp, args.volumes, tuple(args.shape))
        # Rows interleaved round by round, so a slow spell of a shared machine hits all alike.
        for round_number in range(args.rounds):
            reference = tmp / f"in-process-{round_number}"
            began = time.perf_counter()
            explain_cohort(args.model, inputs, reference, args.methods, device="cpu",
                           stderr=io.StringIO())
            runs["in-process"].append({"workers": 0, "threads_per_worker": cores,
                                       "start_s": 0.0, "cohort_s": time.perf_counter() - began,
                                       "identical": True})
            for workers in (1, 2):
                began = time.perf_counter()
                cluster, spec = start_local_cluster(workers, ExplainSettings(
                    model=args.model, methods=tuple(args.methods), device="cpu"))
                with cluster, Client(cluster) as client:
                    started = time.perf_counter() - began
                    began = time.perf_counter()
                    folder = tmp / f"local-{workers}-{round_number}"
                    explain_cohort(args.model, inputs, folder, args.methods, device="cpu",
                                   client=client, stderr=io.StringIO())
                    seconds = time.perf_counter() - began
                runs[f"--cluster local:{workers}"].append({
                    "workers": workers, "threads_per_worker": spec.threads, "start_s": started,
                    "cohort_s": seconds, "identical": same_files(reference, folder)})
    rows = []
    for name, results in runs.items():
        rows.append({"row": name, "workers": results[0]["workers"],
                     "threads_per_worker": results[0]["threads_per_worker"],
                     "start_s": statistics.median(r["start_s"] for r in results),
                     "cohort_s": statistics.median(r["cohort_s"] for r in results),
                     "rounds_cohort_s": [r["cohort_s"] for r in results],
                     "identical": all(r["identical"] for r in results)})
    base = rows[0]["cohort_s"]
    for row in rows:
        row["volumes_per_min"] = args.volumes / row["cohort_s"] * 60.0
        row["vs_in_process"] = row["cohort_s"] / base
    header = (f"{'run':<20} {'workers':>7} {'threads':>7} {'start s':>8} {'cohort s':>9} "
              f"{'vol/min':>8} {'x in-proc':>9} {'identical':>9}")
    print(f"{args.volumes} volumes of {' x '.join(map(str, args.shape))}, model {args.model}, "
          f"methods {', '.join(args.methods)}, {cores} cores, torch {torch.__version__}, "
          f"median of {args.rounds} interleaved round(s)")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['row']:<20} {r['workers']:>7} {r['threads_per_worker']:>7} "
              f"{r['start_s']:>8.1f} {r['cohort_s']:>9.1f} {r['volumes_per_min']:>8.1f} "
              f"{r['vs_in_process']:>9.2f} {'yes' if r['identical'] else 'NO':>9}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": args.model, "methods": args.methods, "volumes": args.volumes,
        "shape": args.shape, "rounds": args.rounds, "cores": cores, "torch": torch.__version__,
        "platform": platform.platform(), "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, indent=2)
        + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
