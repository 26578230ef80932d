"""The README's RISE command on the real lung1 CT, timed as a user runs it (wall clock of the command).

    python bench/readme_rise.py --data ../shared/data            # table + bench/results/readme_rise.json
    python bench/readme_rise.py --data ../shared/data --masks 4000

Runs ``xaiexplain explain lung1_image.nrrd --model lung-nodule-2d --method rise --option masks=N
--option seed=1`` in a fresh process (imports and model loading included) and records its wall time,
its CPU time, the machine's cores and the load average around the run: on a shared machine the
wall time is an upper bound for an idle one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(data: Path, masks: int, threads: int | None) -> dict:
    image = data / "lung1_image.nrrd"
    if not image.is_file():
        raise SystemExit(f"{image} not found: pass --data with the folder that holds lung1_image.nrrd")
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "XAIExplainLib.cli", "explain", str(image), "--model", "lung-nodule-2d",
                   "--method", "rise", "--option", f"masks={masks}", "--option", "seed=1", "-o", out]
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()[0]
    if done.returncode != 0:
        raise SystemExit(f"the command failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"masks": masks, "wall_s": wall, "cpu_s": cpu, "cpu_cores": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_after,
            "threads": threads, "machine": platform.processor() or platform.machine(),
            "python": platform.python_version()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding lung1_image.nrrd")
    parser.add_argument("--masks", type=int, nargs="+", default=[500])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the command")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "readme_rise.json")
    args = parser.parse_args(argv)
    rows = [run(args.data, masks, args.threads) for masks in args.masks]
    print(f"{'masks':>6} {'wall s':>8} {'cpu s':>8} {'cores':>5} {'load before/after':>18}")
    for row in rows:
        print(f"{row['masks']:>6} {row['wall_s']:>8.1f} {row['cpu_s']:>8.1f} {row['cpu_cores']:>5} "
              f"{row['load_average_before']:>8.1f} / {row['load_average_after']:<8.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
