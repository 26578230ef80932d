"""The reproduction report's quick mode: every section present, with finite numbers and figures.

Runs ``python -m bench.reproduce --quick`` once (under 90 s on a shared 2-core
machine).  A section may only be skipped when what it needs is really missing
here (a bundled model not yet in this checkout, or the shared real images).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SECTIONS = ["ajr2018", "crm2019", "spie2022", "eiecs2021", "guan2022", "sanity"]
NEEDS = {"ajr2018": ["ct-phase-2d"], "crm2019": ["lung-nodule-2d"], "spie2022": ["lung-nodule-seg-3d"],
         "eiecs2021": ["lung-nodule-seg-3d"], "guan2022": ["lung-nodule-2d"],
         "sanity": ["ct-phase-2d", "lung-nodule-seg-3d"]}


def _numbers(value):
    """Every number in a JSON value (bools excluded)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    data = ["--data", str(DATA)] if (DATA / "lung1_image.nrrd").is_file() else []
    run = subprocess.run([sys.executable, "-m", "bench.reproduce", "--quick", "--out", str(out)] + data, capture_output=True,
                         text=True, encoding="utf-8", timeout=600, cwd=ROOT)
    assert run.returncode == 0, f"bench.reproduce --quick failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out


def test_quick_report_has_every_section_with_numbers(quick_report):
    from XAIExplainLib.models import list_models

    bundled = {m.name for m in list_models()}
    report = (quick_report / "report.md").read_text(encoding="utf-8")
    results = json.loads((quick_report / "results.json").read_text(encoding="utf-8"))
    assert "NaN" not in (quick_report / "results.json").read_text(encoding="utf-8")
    assert set(results["sections"]) == set(SECTIONS)
    assert "## Summary" in report
    figures = sorted(p.name for p in quick_report.glob("*.png"))
    assert figures, "the quick report wrote no figure"
    for key in SECTIONS:
        section = results["sections"][key]
        assert section["title"] in report
        assert section["status"] != "error", section["error"]
        missing = [name for name in NEEDS[key] if name not in bundled]
        if section["status"] == "skipped":
            assert missing, f"{key} was skipped although its models are bundled: {section['skipped']}"
            assert section["skipped"] in report
            continue
        numbers = list(_numbers(section["results"]))
        assert numbers and all(math.isfinite(v) for v in numbers), key
        assert section["verdicts"] and all(v["holds"] in (True, False) for v in section["verdicts"]), key
        assert section["tables"] and all(t["rows"] for t in section["tables"]), key
        for name in section["figures"]:
            assert name in figures and f"]({name})" in report
        assert section["measured"]


def test_phase_slices_match_the_training_generator():
    """The AJR section's slices (with masks) are exactly ``datasets.phase_sample``'s."""
    from bench.reproduce.data import phase_slices
    from XAIExplainLib.models.training import datasets as ds

    data = phase_slices(2, 4242)
    for i in range(2):
        x, y = ds.phase_sample(4242, i)
        np.testing.assert_array_equal(data["x"][i], x)
        assert data["y"][i] == y
        assert data["used"][i].any() and not data["used"][i].all()
