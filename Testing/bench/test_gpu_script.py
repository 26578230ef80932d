"""``bash bench/gpu.sh --dry-run``: the GPU command imports and starts every step on a CPU.

A GPU is lent rarely and for minutes, so the command must work the first time: the dry run
collects the CUDA tests and runs every bench step at tiny sizes on the CPU, and its JSON must
hold every row the GPU run will time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_the_dry_run_starts_every_step_and_writes_every_row(tmp_path):
    done = _run("--dry-run", out=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["dry_run"] is True
    steps = {s["step"]: s["status"] for s in result["steps"]}
    assert steps["cuda tests (collected)"] == 0  # exit 5 would mean no CUDA test was collected
    assert steps["peer rows"] == 0 and steps["whole volumes"] == 0
    assert steps["nnU-Net rows"] == 0 or str(steps["nnU-Net rows"]).startswith("skipped")
    assert "test_explain_on_cuda_equals_cpu" in done.stdout and "out_of_memory" in done.stdout
    peers = {row["row"]: row for row in result["peers"]["2d"]}
    for row in ("plain inference", "xaiexplain gradcam", "xaiexplain 5 CAM maps"):
        assert peers[row]["seconds"] > 0, row
    volumes = [row["row"] for row in result["gpu_volumes"]["rows"]]
    assert len(volumes) == 5 and any(r.startswith("3D Grad-CAM") for r in volumes)
    assert all(row["seconds"] > 0 for row in result["gpu_volumes"]["rows"])


def test_a_wrong_argument_is_one_line_and_a_run_without_a_gpu_is_refused(tmp_path):
    done = _run("--fast", out=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "bench/gpu.sh: unknown argument '--fast' (use --dry-run, --out DIR)"]
    import torch

    if not torch.cuda.is_available():
        done = _run(out=tmp_path)
        assert done.returncode == 2 and "no CUDA GPU visible" in done.stderr
