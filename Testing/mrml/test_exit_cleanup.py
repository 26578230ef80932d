"""A script that makes a headless scene, runs the logic and exits ends cleanly (issue 25 section 5).

Before, it ended in ``Segmentation fault`` unless it called ``release_headless_scene``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core (real MRML scene in Python) is not installed")

SCRIPT = textwrap.dedent("""
    import numpy as np
    import slicer.util
    from XAIExplainLib import mrml
    from XAIExplainLib.logic.explain_logic import XAIExplainLogic

    mrml.create_headless_scene()
    logic = XAIExplainLogic()
    ct = np.random.default_rng(0).uniform(-200, 200, (3, 32, 32)).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(ct, name="ct")
    nodes = logic.explainVolume(volume, "ct-phase-2d", methods=["gradcam"])
    mask = np.zeros((3, 32, 32), np.uint8)
    mask[1, 10:20, 10:20] = 1
    label = slicer.util.addVolumeFromArray(mask, nodeClassName="vtkMRMLLabelMapVolumeNode", name="mask")
    logic.evaluateHeatmap(nodes.heatmaps["gradcam"], label)
    print("finished")
""")


def test_a_headless_script_exits_without_releasing_its_scene(tmp_path):
    package = Path(__file__).resolve().parents[2] / "XAIExplain"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert "finished" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
