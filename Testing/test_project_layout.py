"""The README's test command is what CI runs, and it pins the CPU build of torch."""
import re
import sys
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    after_marker = readme.split("<!-- test-command -->", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", after_marker).group(1)
    extracted = subprocess.run(
        ["awk", r'/<!-- test-command -->/{getline; while ($0 ~ /^```/ || $0 == "") getline; print; exit}',
         str(ROOT / "README.md")], capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == command
    assert "-c Testing/constraints-cpu.txt" in command
    assert "torch==2.13.0" in (ROOT / "Testing" / "constraints-cpu.txt").read_text()


def test_layout_of_design_section_1():
    for path in ["XAIExplain/XAIExplain.py", "XAIExplain/CMakeLists.txt", "CMakeLists.txt", "pyproject.toml",
                 "XAIExplain/XAIExplainLib/engine", "XAIExplain/XAIExplainLib/evaluation",
                 "XAIExplain/XAIExplainLib/models", "XAIExplain/XAIExplainLib/imaging", "bench/run.py", ".ci/run"]:
        assert (ROOT / path).exists(), path


def test_slicer_facing_modules_import_without_torch():
    """The Slicer panel imports the logic before PyTorch may be installed (it is installed on first Apply)."""
    code = ("import sys; import XAIExplainLib.logic, XAIExplainLib.mrml; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_at_the_top_level():
    import XAIExplainLib as xai
    for name in ["explain", "explain_many", "explain_volume", "METHODS", "SegmentationTarget", "evaluate",
                 "load_model", "list_models", "explain_image"]:
        assert name in xai.__all__ and callable(getattr(xai, name)) or isinstance(getattr(xai, name), dict)
