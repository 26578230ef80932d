"""Every ```python and ```bash snippet of README.md runs here, so the README cannot drift from the code.

Each fenced snippet is looked up in ``STAND_INS`` by its first line. The entry says which
placeholders of the snippet (``scan.nrrd``, ``model``, ``x`` ...) small real inputs stand in
for; the snippet's own text is then run: Python with ``exec``, shell lines command by command
(``xaiexplain`` through the CLI's ``main`` in this process). Commands that cannot run inside a
test (``pip install``, the whole test suite) get a bounded check of what they name.

A snippet the table does not know FAILS this test. To add one, append to ``STAND_INS``:

    "<the snippet's first line, stripped>": StandIn(
        kind="python" | "bash",
        replace={"placeholder text": "{stand_in_name}", ...},  # plain text replacements
        names=("x", "model", ...),   # Python: stand-ins put into the namespace (see _python_names)
    ),

``{name}`` in a replacement is filled from the stand-in inputs (``scan``, ``mask``,
``cohort``, ``out``, ``scheduler`` ...; see :func:`stand_ins`). A replacement that no longer
occurs in its snippet fails too, so an edited snippet gets its entry reviewed.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(python|bash)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class StandIn:
    """How one README snippet runs: its kind, text replacements, namespace stand-ins."""

    kind: str
    replace: dict = field(default_factory=dict)
    names: tuple = ()
    needs: tuple = ()  # importable modules the snippet needs (skipped when absent)


#: Keyed by the snippet's first line. Values in ``replace`` may name stand-ins as {name}.
STAND_INS: dict[str, StandIn] = {
    "pip install -e . && xaiexplain demo": StandIn("bash"),
    'pip install -c Testing/constraints-cpu.txt -e ".[test]" && python -m pytest -q Testing': StandIn("bash"),
    "xaiexplain models                       # bundled models: task, dims, classes": StandIn(
        "bash",
        replace={"scan.nrrd": "{scan}", "nodule.nrrd": "{mask}", "cohort.txt": "{cohort}",
                 "audit/": "{out}/audit/", "rise/": "{out}/rise/",
                 # 500 masks take about a minute on a CPU (the README states the time); 24 show it runs
                 "masks=500": "masks=24"}),
    "xaiexplain explain cohort.txt --model lung-nodule-2d --method gradcam -o audit-2d/ --cluster local:4": StandIn(
        "bash", replace={"cohort.txt": "{cohort}", "audit-2d/": "{out}/audit-2d/", "local:4": "local:1",
                         "tcp://scheduler:8786": "{scheduler}"},
        needs=("distributed",)),
    "from XAIExplainLib.cli import explain_cohort": StandIn(
        "python", replace={'"audit-2d/"': '"{out}/audit-2d/"'}, names=("paths", "client"), needs=("distributed",)),
    "import XAIExplainLib as xai": StandIn("python", names=("model", "x", "volume")),
    'model = xai.load_model("ct-phase-2d")              # bundled name, a model folder or a card.json': StandIn(
        "python", replace={'"scan.nrrd"': '"{abdomen}"'}, names=("xai", "nodule_mask")),
    'logic = slicer.util.getModuleLogic("XAIExplain")': StandIn(
        "python", names=("slicer", "volumeNode", "noduleLabelMapNode"), needs=("slicer",)),
}


def readme_snippets() -> list[tuple[int, str, str]]:
    """``(line, kind, code)`` of every fenced python / bash block of README.md."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2))
            for match in FENCE.finditer(text)]


def _first_line(code: str) -> str:
    return next(line.strip() for line in code.splitlines() if line.strip())


def check_stand_ins(snippets) -> None:
    """Fail with how to add an entry when a snippet has none (and name entries without a snippet)."""
    unknown = [(line, kind, _first_line(code)) for line, kind, code in snippets
               if _first_line(code) not in STAND_INS]
    assert not unknown, "\n".join(
        f"README.md line {line}: the ```{kind} snippet starting {first!r} is not in STAND_INS of "
        f"{Path(__file__).relative_to(ROOT)}; add an entry keyed by that first line saying which small inputs "
        "stand in for its placeholders (see this file's docstring)" for line, kind, first in unknown)
    stale = set(STAND_INS) - {_first_line(code) for _, _, code in snippets}
    assert not stale, f"STAND_INS entries for snippets no longer in README.md: {sorted(stale)}"


def test_every_readme_snippet_has_a_stand_in_entry():
    check_stand_ins(readme_snippets())


def test_a_snippet_without_an_entry_fails_and_says_how_to_add_one():
    snippets = readme_snippets() + [(999, "bash", "xaiexplain something-new scan.nrrd\n")]
    with pytest.raises(AssertionError, match=r"README.md line 999: the ```bash snippet starting "
                                             r"'xaiexplain something-new scan.nrrd' is not in STAND_INS .*add an entry"):
        check_stand_ins(snippets)


# ---- stand-in inputs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Small real inputs for the README's placeholders (paths as text)."""
    import SimpleITK as sitk

    from XAIExplainLib.imaging.phantoms import abdominal_phantom, chest_phantom

    folder = tmp_path_factory.mktemp("readme")
    chest = chest_phantom(seed=2, shape=(3, 96, 96), spacing=(5.0, 3.0, 3.0))
    scan, mask = folder / "scan.nrrd", folder / "nodule.nrrd"
    sitk.WriteImage(chest.image(), str(scan))
    nodule = chest.mask("nodule")
    nodule[1, 40:50, 40:50] |= ~nodule[1].any()  # a mask on every slice the tests score
    mask_image = sitk.GetImageFromArray(nodule.astype(np.uint8))
    mask_image.CopyInformation(chest.image())
    sitk.WriteImage(mask_image, str(mask))
    small = chest_phantom(seed=3, shape=(16, 40, 40), spacing=(2.0, 2.0, 2.0))
    second = folder / "small.nrrd"
    sitk.WriteImage(small.image(), str(second))
    cohort = folder / "cohort.txt"
    cohort.write_text(f"{second}\n", encoding="utf-8")
    abdomen = folder / "abdomen.nrrd"
    sitk.WriteImage(abdominal_phantom(seed=1, shape=(2, 96, 96), spacing=(5.0, 4.0, 4.0)).image(), str(abdomen))
    return {"scan": str(scan), "mask": str(mask), "cohort": str(cohort), "abdomen": str(abdomen),
            "small": str(second), "out": str(folder / "out"), "folder": folder}


def _fill(text: str, entry: StandIn, values: dict) -> str:
    for placeholder, stand_in in entry.replace.items():
        assert placeholder in text, (f"the README snippet no longer contains {placeholder!r}: update its "
                                     f"STAND_INS entry in {Path(__file__).name}")
        text = text.replace(placeholder, stand_in.format(**values))
    return text


def _needs(entry: StandIn) -> None:
    for module in entry.needs:
        pytest.importorskip(module, reason=f"the snippet needs {module}")


@pytest.mark.parametrize("line,kind,code", readme_snippets(), ids=lambda v: str(v)[:40])
def test_readme_snippet_runs(line, kind, code, stand_ins, monkeypatch, capsys, request):
    entry = STAND_INS.get(_first_line(code))
    if entry is None:
        pytest.fail(f"README.md line {line}: unknown snippet (see test_every_readme_snippet_has_a_stand_in_entry)")
    assert entry.kind == kind, f"README.md line {line}: the snippet is ```{kind}, its entry says {entry.kind}"
    _needs(entry)
    values = dict(stand_ins)
    monkeypatch.chdir(stand_ins["folder"])
    if kind == "bash":
        if "{scheduler}" in "".join(entry.replace.values()):
            values["scheduler"] = request.getfixturevalue("scheduler_address")
        _run_shell(_fill(code, entry, values), line, capsys)
    else:
        namespace = _python_names(entry.names, stand_ins, request)
        exec(compile(_fill(code, entry, values), f"README.md:{line}", "exec"), namespace)  # noqa: S102


# ---- shell ----------------------------------------------------------------------------------


def _commands(code: str) -> list[list[str]]:
    """The snippet's commands: continuation lines joined, comments dropped, ``&&`` split."""
    joined = re.sub(r"\\\n", " ", code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return [c for c in commands if c]


def _run_shell(code: str, line: int, capsys) -> None:
    from XAIExplainLib import cli

    for words in _commands(code):
        if words[0] == "xaiexplain":
            status = cli.main(words[1:])
            captured = capsys.readouterr()
            assert status == 0, f"README.md line {line}: {' '.join(words)} exited {status}: {captured.err[-1500:]}"
        elif words[:2] == ["pip", "install"]:
            _check_pip_install(words[2:], line)
        elif words[:3] == ["python", "-m", "pytest"]:
            _check_pytest(words[3:], line)
        else:
            pytest.fail(f"README.md line {line}: no way to run {' '.join(words)!r}: teach _run_shell in "
                        f"{Path(__file__).name} how to run or check it")


def _check_pip_install(args: list[str], line: int) -> None:
    """Bounded check (no download): the files and extras a ``pip install`` names exist in the checkout."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(project["project"].get("optional-dependencies", {}))
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word == "-c":
            assert (ROOT / rest.pop(0)).is_file(), f"README.md line {line}: constraints file missing"
        elif word == "-e":
            continue
        else:
            match = re.fullmatch(r"(\.)(?:\[([^\]]+)\])?", word)
            assert match, f"README.md line {line}: pip install {word!r} is not this checkout ('.' or '.[extra]')"
            for extra in filter(None, (match.group(2) or "").split(",")):
                assert extra in extras, f"README.md line {line}: extra {extra!r} is not in pyproject.toml"


def _check_pytest(args: list[str], line: int) -> None:
    """Bounded check: the suite the README runs exists and collects (its collection of one file here)."""
    import subprocess

    paths = [a for a in args if not a.startswith("-")]
    assert paths and all((ROOT / p).exists() for p in paths), f"README.md line {line}: no such test path {paths}"
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "Testing" / "project" / "test_import_direction.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "XAIExplain"),
                                                                            os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield cluster, client


@pytest.fixture
def scheduler_address(dask_cluster):
    return dask_cluster[0].scheduler_address


# ---- python ---------------------------------------------------------------------------------


def _python_names(names, stand_ins, request) -> dict:
    """The namespace a Python snippet starts with: the stand-ins it names."""
    import torch

    import XAIExplainLib as xai

    namespace: dict = {"__name__": "readme_snippet"}
    for name in names:
        if name == "xai":
            namespace["xai"] = xai
        elif name == "model":  # what xai.load_model returns (a LoadedModel)
            namespace["model"] = xai.load_model("ct-phase-2d", device="cpu")
        elif name == "x":
            namespace["x"] = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        elif name == "volume":
            namespace["volume"] = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
        elif name == "paths":
            namespace["paths"] = [stand_ins["small"]]
        elif name == "client":
            namespace["client"] = request.getfixturevalue("dask_cluster")[1]
        elif name == "nodule_mask":  # a mask on the grid of the snippet's scan
            import SimpleITK as sitk

            scan = sitk.ReadImage(stand_ins["abdomen"])
            mask = np.zeros(sitk.GetArrayViewFromImage(scan).shape, np.uint8)
            mask[:, 40:60, 30:50] = 1
            image = sitk.GetImageFromArray(mask)
            image.CopyInformation(scan)
            namespace["nodule_mask"] = image
        elif name in ("slicer", "volumeNode", "noduleLabelMapNode"):
            namespace.update(_slicer_names(stand_ins, request))
        else:
            raise AssertionError(f"no stand-in named {name!r}: add it to _python_names")
    return namespace


def _slicer_names(stand_ins, request) -> dict:
    """A headless scene standing in for Slicer: the module logic, a CT volume node and a label map node."""
    import slicer
    import slicer.util

    from XAIExplainLib import mrml
    from XAIExplainLib.logic.explain_logic import XAIExplainLogic

    scene = mrml.create_headless_scene(set_current=True)
    request.addfinalizer(lambda: mrml.release_headless_scene(scene))
    logic = XAIExplainLogic()
    request.getfixturevalue("monkeypatch").setattr(
        slicer.util, "getModuleLogic", lambda name: logic if name == "XAIExplain" else None, raising=False)
    ct = np.random.default_rng(0).uniform(-200, 200, (2, 64, 64)).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(ct, name="ct")
    label = np.zeros((2, 64, 64), np.uint8)
    label[:, 20:40, 20:40] = 1
    mask = slicer.util.addVolumeFromArray(label, nodeClassName="vtkMRMLLabelMapVolumeNode", name="nodule")
    return {"slicer": slicer, "volumeNode": volume, "noduleLabelMapNode": mask}
