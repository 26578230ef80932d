"""The README's test command is what CI runs, and it pins the CPU build of torch."""
import re
import sys
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after_marker = readme.split("<!-- test-command -->", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", after_marker).group(1)
    extracted = subprocess.run(
        ["awk", r'/<!-- test-command -->/{getline; while ($0 ~ /^```/ || $0 == "") getline; print; exit}',
         str(ROOT / "README.md")], capture_output=True, text=True, encoding="utf-8", check=True).stdout.strip()
    assert extracted == command
    assert "-c Testing/constraints-cpu.txt" in command
    assert "torch==2.13.0" in (ROOT / "Testing" / "constraints-cpu.txt").read_text(encoding="utf-8")


def test_layout_of_design_section_1():
    for path in ["XAIExplain/XAIExplain.py", "XAIExplain/CMakeLists.txt", "CMakeLists.txt", "pyproject.toml",
                 "XAIExplain/XAIExplainLib/engine", "XAIExplain/XAIExplainLib/evaluation",
                 "XAIExplain/XAIExplainLib/models", "XAIExplain/XAIExplainLib/imaging", "bench/peers/run.py", "bench/reproduce/__main__.py", ".ci/run"]:
        assert (ROOT / path).exists(), path


def test_slicer_facing_modules_import_without_torch():
    """The Slicer panel imports the logic before PyTorch may be installed (it is installed on first Apply)."""
    code = ("import sys; import XAIExplainLib.logic, XAIExplainLib.mrml; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_at_the_top_level():
    """About a dozen entry points at the top (the 77 flattened names before); metrics under evaluation."""
    import inspect

    import XAIExplainLib as xai
    from XAIExplainLib import evaluation

    assert sorted(xai.__all__) == sorted(["explain", "explain_many", "explain_volume", "predict_volume", "METHODS",
                                          "SegmentationTarget", "load_model", "list_models", "explain_image",
                                          "predict_image", "evaluate"])
    for name in xai.__all__:
        assert callable(getattr(xai, name)) or isinstance(getattr(xai, name), dict)
    assert not hasattr(xai, "rank_correlation") and not hasattr(xai, "dice_sweep")
    assert {"dice_sweep", "pointing_game", "evaluate", "deletion_auc"} <= set(evaluation.__all__)
    assert all(hasattr(evaluation, name) for name in evaluation.__all__)
    assert not {"rank_correlation", "parameterized_layers", "baseline_like"} & set(evaluation.__all__)
    public = inspect.signature(xai.explain_many).parameters
    assert "layer_resolution" not in public and "with_output" not in public  # the engine's internal flags


def test_docstrings_cite_papers_not_unshipped_notes():
    """DESIGN.md is not shipped and "seed 002" means nothing to a user: docstrings cite the paper."""
    offenders = []
    for path in (ROOT / "XAIExplain" / "XAIExplainLib").rglob("*.py"):
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"DESIGN\.md|\bseeds? \d{3}\b", line):
                offenders.append(f"{path.relative_to(ROOT)}:{line_number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_pyproject_lists_every_package_on_disk():
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT / "XAIExplain").parts)
               for p in (ROOT / "XAIExplain" / "XAIExplainLib").rglob("__init__.py")}
    assert listed == on_disk | {"XAIExplainLib.Resources"}


def test_a_wheel_install_carries_the_resources(tmp_path):
    """A non-editable install finds the bundled models and colour tables inside the package."""
    import pytest
    pytest.importorskip("setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "wheel"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    code = ("from XAIExplainLib.resources import resources_dir; d = resources_dir(); "
            "print(d); assert (d / 'ColorTables' / 'Inferno.txt').is_file(); "
            "assert any((d / 'Models').glob('*/card.json'))")
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(tmp_path / "site")},
                          cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", check=True)
    assert str(tmp_path / "site") in done.stdout
    # the installed package lists and loads its bundled models (it looked beside the package before)
    listed = subprocess.run([sys.executable, "-m", "XAIExplainLib.cli", "models"], env={"PYTHONPATH": str(tmp_path / "site")},
                            cwd=tmp_path, capture_output=True, text=True, encoding="utf-8")
    assert listed.returncode == 0, listed.stderr
    for name in ("ct-phase-2d", "lung-nodule-2d", "lung-nodule-seg-3d"):
        assert name in listed.stdout
