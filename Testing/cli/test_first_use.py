"""The small things a new user trips over (issue 25, section 6): install hints that work from the
checkout, a summary.csv with the same columns for every input, help that names the real files,
listings that say what each method costs and label their columns, list-file errors with the path that
was looked for, a truncated NRRD's real size, a readable rate, and ``xaiexplain models`` without torch."""
from __future__ import annotations

import ast
import csv
import gzip
import io
import re
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib import cli
from XAIExplainLib.cli.discovery import discover
from XAIExplainLib.cli.listing import print_methods, print_metrics
from XAIExplainLib.cli.main import build_parser
from XAIExplainLib.cli.progress import Progress, rate_text
from XAIExplainLib.cli.summary import InputRecord, RunSummary
from XAIExplainLib.extras import install_hint
from XAIExplainLib.imaging import reading

ROOT = Path(__file__).resolve().parents[2]


# ---- install hints -------------------------------------------------------------------------

def _texts():
    for folder in ("XAIExplain", "Testing", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            yield path, path.read_text(encoding="utf-8")
    yield ROOT / "README.md", (ROOT / "README.md").read_text(encoding="utf-8")


def test_no_install_hint_names_the_package_on_a_registry():
    """Installing the package by its name with an extra cannot work: XAIExplain is installed from its checkout."""
    wrong = [f"{path.relative_to(ROOT)}: {match}" for path, text in _texts()
             for match in re.findall(r"pip install [\"']?xaiexplain\[[^\]]*\]", text)]
    assert not wrong, wrong


def test_every_install_hint_names_an_extra_of_pyproject():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
                 ["optional-dependencies"])
    named = set()
    for path, text in _texts():
        if path.suffix == ".py":
            named |= {node.args[0].value for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)
                      and getattr(node.func, "id", None) == "install_hint" and node.args
                      and isinstance(node.args[0], ast.Constant)}
        named |= set(re.findall(r'pip install [^`\n]*"\.\[([a-z-]+)\]"', text))
    assert {"hd-bet", "cluster", "nnunet", "monai", "lrp"} <= named
    assert named <= extras, f"hints name extras pyproject.toml does not have: {sorted(named - extras)}"
    hint = install_hint("hd-bet")
    assert hint.startswith('pip install ".[hd-bet]"') and "-c Testing/constraints-cpu.txt" in hint


def test_a_missing_optional_package_says_how_to_install_it_from_the_checkout(monkeypatch):
    from XAIExplainLib.engine.methods import lrp
    from XAIExplainLib.models import hd_bet_card

    monkeypatch.delitem(sys.modules, "zennit", raising=False)
    monkeypatch.setattr(lrp.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=re.escape('LRP needs zennit: pip install ".[lrp]" in the XAIExplain '
                                                    'checkout; add -c Testing/constraints-cpu.txt')):
        lrp._zennit()
    monkeypatch.setattr(hd_bet_card.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=re.escape('pip install ".[hd-bet]" in the XAIExplain checkout')):
        hd_bet_card.weights_folder()


def test_the_readme_gives_hd_bets_cost_beside_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("**A real model: HD-BET.**"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    assert 'pip install ".[hd-bet]"' in paragraph and "-c Testing/constraints-cpu.txt" in paragraph
    assert "about\n5 min and 6 GB" in paragraph or "about 5 min and 6 GB" in paragraph


# ---- summary.csv: fixed columns, the plain input, the list line in its own column -----------

def test_summary_csv_has_the_same_columns_for_every_input():
    summary = RunSummary("explain", methods=["gradcam"])
    for stem, threshold in (("lung1_image", 0.31), ("brain1_image", 0.52)):
        record = InputRecord(f"data/{stem}.nrrd", stem, "ok", listed_in=f"cohort.txt:{len(summary.records) + 1}")
        record.prediction = {"task": "classification", "predicted_class": "nodule", "score": {"nodule": 0.9},
                             "label_threshold": {f"{stem}_gradcam": threshold}}
        record.timings = {"gradcam": 0.5}
        summary.records.append(record)
    rows = list(csv.DictReader(io.StringIO(summary.to_csv())))
    columns = list(rows[0])
    assert columns[:3] == ["input", "listed_in", "stem"]
    assert "label_threshold_gradcam" in columns
    assert not [c for c in columns if "lung1" in c or "brain1" in c], columns
    assert [r["label_threshold_gradcam"] for r in rows] == ["0.31", "0.52"]
    assert [(r["input"], r["listed_in"]) for r in rows] == [("data/lung1_image.nrrd", "cohort.txt:1"),
                                                            ("data/brain1_image.nrrd", "cohort.txt:2")]


def _small_ct(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    voxels = np.full((3, 40, 40), -1000, np.int16)
    voxels[:, 10:30, 12:28] = rng.integers(0, 200, size=(3, 20, 16))
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((3.0, 3.0, 5.0))
    sitk.WriteImage(image, str(path))
    return path


def test_a_cohort_from_a_list_file_writes_plain_inputs_and_fixed_columns(tmp_path, capsys):
    lists = tmp_path / "lists"
    (lists / "scans").mkdir(parents=True)
    _small_ct(lists / "scans" / "a.nrrd", 1)
    _small_ct(lists / "scans" / "b.nrrd", 2)
    listing = lists / "cohort.txt"
    listing.write_text("# two scans beside the list\nscans/a.nrrd\nscans/b.nrrd\n", encoding="utf-8")
    out = tmp_path / "out"
    status = cli.main(["explain", str(listing), "--model", "ct-phase-2d", "--method", "gradcam",
                       "--label-threshold", "otsu", "--output-dir", str(out), "--quiet", "--device", "cpu",
                       "--jobs", "0"])
    assert status == 0, capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text(encoding="utf-8"))))
    assert [r["input"] for r in rows] == [str(lists / "scans" / "a.nrrd"), str(lists / "scans" / "b.nrrd")]
    assert [r["listed_in"] for r in rows] == [f"{listing}:2", f"{listing}:3"]
    assert all(Path(r["input"]).is_file() for r in rows)  # the column is a path that opens
    columns = list(rows[0])
    assert "label_threshold_gradcam" in columns
    assert not [c for c in columns if "_a_" in c or "_b_" in c], columns  # no column named after an input
    assert all(r["label_threshold_gradcam"] for r in rows)


def test_a_missing_relative_path_in_a_list_shows_the_path_that_was_looked_for(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    listing = lists / "cohort.txt"
    listing.write_text("scans/missing.nrrd\n", encoding="utf-8")
    [item] = discover([str(listing)])
    message = str(item.error)
    assert message.startswith(f"{listing}:1: {lists / 'scans' / 'missing.nrrd'}: no such file or folder")
    assert "relative path is read from the list's folder" in message
    assert item.plain == str(lists / "scans" / "missing.nrrd") and item.listed_in == f"{listing}:1"


# ---- help and listings -------------------------------------------------------------------------

def _subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


def test_evaluate_help_names_the_files_it_writes():
    text = " ".join(_subparser("evaluate").format_help().split())
    assert "<stem>_evaluation.csv" in text and "<stem>_evaluation.json" in text
    assert not re.search(r"(?<![_>])evaluation\.csv", text), text


def test_methods_say_what_each_costs():
    from XAIExplainLib.engine import METHODS

    stream = io.StringIO()
    print_methods(stream=stream)
    text = " ".join(stream.getvalue().split())
    assert stream.getvalue().startswith("METHOD ")
    for name, info in METHODS.items():
        assert f"cost: {' '.join(info.cost.split())}" in text, name
    gradcam = re.search(r"\ngradcam +(.*?)\n\S", stream.getvalue(), re.S).group(1)
    assert "cost: 1 forward + 1 backward" in " ".join(gradcam.split())


def test_metrics_are_a_table_with_labelled_columns():
    from XAIExplainLib.evaluation import METRICS
    from XAIExplainLib.evaluation.api import ON_REQUEST

    stream = io.StringIO()
    print_metrics(stream=stream)
    lines = stream.getvalue().splitlines()
    header = lines[0]
    assert header.startswith("METRIC") and "NEEDS" in header and "COMPUTED" in header
    body = lines[1:1 + len(METRICS)]
    assert [line.split()[0] for line in body] == list(METRICS)
    start = header.index("COMPUTED")
    for line in body:  # each value sits under its column's label
        name = line.split()[0]
        assert line[start:] == ("when named" if name in ON_REQUEST else "by default"), line
        needs = line[header.index("NEEDS"):start].strip()
        assert needs == (", ".join(METRICS[name]) or "-")


def test_models_lists_the_bundled_models_without_importing_torch():
    code = ("import sys; from XAIExplainLib.cli import main; status = main(['models']); "
            "assert status == 0; print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                          check=True, timeout=120)
    assert done.stdout.strip().endswith("NO TORCH"), done.stdout[-300:]
    for name in ("ct-phase-2d", "lung-nodule-2d", "lung-nodule-seg-3d"):
        assert f"\n{name}  (" in "\n" + done.stdout


# ---- a truncated NRRD's real size --------------------------------------------------------------

def _gzip_nrrd(path: Path, voxels: np.ndarray, members: int = 1) -> tuple[int, int]:
    """A gzip-encoded NRRD written by hand; (header bytes, declared data bytes)."""
    header = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {' '.join(map(str, voxels.shape[::-1]))}\n"
              "endian: little\nencoding: gzip\n\n").encode()
    data = voxels.astype("<i2").tobytes()
    parts = np.array_split(np.frombuffer(data, np.uint8), members)
    path.write_bytes(header + b"".join(gzip.compress(part.tobytes()) for part in parts))
    return len(header), len(data)


def _bytes_before_the_cut(path: Path, offset: int) -> int:
    """What a gzip stream cut short decompresses to, counted one byte at a time (a naive reference)."""
    with open(path, "rb") as raw:
        raw.seek(offset)
        stream, count = gzip.GzipFile(fileobj=raw), 0
        try:
            while stream.read(1):
                count += 1
        except EOFError:
            pass
    return count


def test_a_truncated_gzip_nrrd_reports_the_data_it_really_holds(tmp_path):
    voxels = np.random.default_rng(0).normal(0, 300, size=(20, 64, 64)).astype(np.int16)
    path = tmp_path / "ct.nrrd"
    offset, declared = _gzip_nrrd(path, voxels)
    whole = path.read_bytes()
    path.write_bytes(whole[: offset + (len(whole) - offset) // 2])
    have = _bytes_before_the_cut(path, offset)
    assert 0.3 * declared < have < 0.7 * declared
    with pytest.raises(reading.ImageReadError) as refused:
        reading.read_image(path)
    assert str(refused.value) == (
        f"{path}: is truncated: the header declares {declared} bytes of voxel data but the decompressed data "
        f"holds {have} bytes; the file was cut short (an interrupted copy or download?), get a complete copy")


def test_a_complete_gzip_nrrd_of_several_members_is_not_called_truncated(tmp_path):
    voxels = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    path = tmp_path / "multi.nrrd"
    _gzip_nrrd(path, voxels, members=3)
    reading.check_declared_size(path)  # no refusal
    assert len(zlib.decompress(path.read_bytes()[path.read_bytes().index(b"\n\n") + 2:], 31)) > 0


# ---- the rate ----------------------------------------------------------------------------------

@pytest.mark.parametrize("computed, seconds, text", [
    (1, 966.0, "16.1 min per input"),   # was "0.0621/min"
    (3, 72.0, "24 s per input"),
    (2, 7.0, "3.5 s per input"),
    (500, 2.0, "250 inputs/s"),          # was "1.5e+04/min"
    (3, 1.0, "3.0 inputs/s"),
])
def test_the_rate_reads_as_time_per_input_or_inputs_per_second(computed, seconds, text):
    assert rate_text(computed, seconds) == text


def test_the_tally_shows_the_readable_rate_and_the_time_left(monkeypatch):
    clock = iter([0.0, 966.0, 966.0])
    monkeypatch.setattr("XAIExplainLib.cli.progress.time.monotonic", lambda: next(clock))
    progress = Progress(3, stream=io.StringIO())
    progress.done = 1
    assert progress.tally() == "1 done, 0 failed, 0 skipped; 16.1 min per input, ETA 32:12"
