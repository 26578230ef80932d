"""The Slicer Extensions Index's description checks, re-implemented to run offline in a test.

The index validates a submitted ``<Extension>.json`` with ``scripts/check_description_files.py``
of the Slicer/ExtensionsIndex repository (read at commit 07f1d1b2781c, 2026-08-07). That script
is not on a package registry, and it clones the extension's repository and downloads the JSON
schema, the icon and the screenshots over the network, so it cannot run in our tests. Each
function below does what one of its checks does, in the same order and with the same rules,
against this checkout instead of a clone; the docstrings name the check it stands for and say
where the offline version has to differ. Two checks cannot be reproduced offline and are not
here: the GitHub topic ``3d-slicer-extension`` (a GitHub API call) and whether each
``build_dependencies`` entry has a description file in the index (the index's own folder; the
PyTorch extension's ``PyTorch.json`` is there at that commit).

Every check raises :class:`ExtensionCheckError` with the index's wording of the failure.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

#: The schema the index validates against (Slicer/Slicer Schemas/, version 1.0.1): draft-07,
#: required keys, no other keys, and the types / enumerations of each key.
SCHEMA_URL = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
              "slicer-extension-catalog-entry-schema-v1.0.1.json")
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
SCHEMA_ENUMS = {"scm_type": ("git", "local"), "tier": (1, 3, 5)}

#: ``ACCEPTED_EXTENSION_CATEGORIES`` of the index's script (the categories its catalog shows).
ACCEPTED_CATEGORIES = (
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
)
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
LICENSE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
SIZE_LIMIT_MB = 100
#: magic numbers of the content types the index accepts for the icon and screenshots
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
                    b"GIF89a": "image/gif"}


class ExtensionCheckError(AssertionError):
    """One failed check: ``check`` is the index's check name, the message its explanation."""

    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check = check


def check_json_file_format(path: Path) -> dict:
    """``check_json_file_format``: valid JSON with LF-only line endings."""
    raw = path.read_bytes()
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExtensionCheckError("check_json_file_format", f"Invalid JSON format: {error}") from None
    if b"\r" in raw:
        raise ExtensionCheckError("check_json_file_format", "File contains non-LF line endings (CR or CRLF).")
    return metadata


def check_json_schema(metadata: dict) -> None:
    """``check_json_schema``: the entry validates against the schema its ``$schema`` names. The index
    downloads that schema; offline only the one version read from Slicer's repository is known."""
    schema = metadata.get("$schema")
    if not schema:
        raise ExtensionCheckError("check_json_schema", "No $schema field found in extension description")
    if schema.split("#")[0] != SCHEMA_URL:
        raise ExtensionCheckError("check_json_schema", f"unknown schema {schema} (known offline: {SCHEMA_URL})")
    missing = [key for key in SCHEMA_REQUIRED if key not in metadata]
    if missing:
        raise ExtensionCheckError("check_json_schema", f"'{missing[0]}' is a required property")
    for key, value in metadata.items():
        if key not in SCHEMA_TYPES:
            raise ExtensionCheckError("check_json_schema", f"Additional properties are not allowed ('{key}')")
        wanted = SCHEMA_TYPES[key]
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise ExtensionCheckError("check_json_schema", f"{value!r} is not of type {wanted.__name__} at path: {key}")
        if key in SCHEMA_ENUMS and value not in SCHEMA_ENUMS[key]:
            raise ExtensionCheckError("check_json_schema", f"{value!r} is not one of {list(SCHEMA_ENUMS[key])}")
        if key == "build_dependencies" and not all(isinstance(item, str) for item in value):
            raise ExtensionCheckError("check_json_schema", "build_dependencies items must be strings")


def check_extension_name(name: str) -> None:
    """``check_extension_name``: the extension (the JSON file's stem) does not start with 'Slicer'."""
    if name.lower().startswith("slicer"):
        raise ExtensionCheckError("check_extension_name", f"extension name *should not* start with 'Slicer': {name}")


def check_category(metadata: dict) -> None:
    """``check_category``: one of the index's accepted categories."""
    category = metadata.get("category")
    if category not in ACCEPTED_CATEGORIES:
        raise ExtensionCheckError("check_category", f"Category **`{category}`** is unknown.")


def check_git_repository_name(metadata: dict) -> None:
    """``check_git_repository_name``: the repository's name starts with 'Slicer' (or a listed variant)."""
    repository = os.path.splitext(urlsplit(metadata["scm_url"].strip().strip("/")).path.split("/")[-1])[0]
    if not repository:
        raise ExtensionCheckError("check_git_repository_name", "Failed to determine repository name from scm_url")
    if not repository.startswith(REPOSITORY_PREFIXES):
        raise ExtensionCheckError("check_git_repository_name",
                                  f"git repository name *should* start with 'Slicer'. The current repository name "
                                  f"is '{repository}'.")


def check_scm_url_syntax(metadata: dict) -> None:
    """``check_scm_url_syntax``: scheme://host/path with a git or https scheme."""
    url = metadata["scm_url"]
    if "://" not in url:
        raise ExtensionCheckError("check_scm_url_syntax", "scm_url do not match scheme://host/path")
    scheme = urlsplit(url).scheme
    if scheme not in ("git", "https"):
        raise ExtensionCheckError("check_scm_url_syntax", f"scm_url scheme is '{scheme}' but it should by any of "
                                                          "['git', 'https']")


def _cmake_value(text: str, pattern: str):
    found = re.findall(pattern, text, re.IGNORECASE | re.MULTILINE)
    return found[0].strip() if found else None


def _local_image(url: str, metadata: dict, root: Path) -> Path:
    """The checkout's file behind a raw-content URL of the extension's own repository and revision."""
    if not url.startswith("http"):
        raise ExtensionCheckError("check_cmakelists_content", f"'{url}' should be a valid URL starting with 'http'")
    repository = urlsplit(metadata["scm_url"]).path.strip("/").removesuffix(".git")
    prefix = f"https://raw.githubusercontent.com/{repository}/{metadata.get('scm_revision', 'main')}/"
    if not url.startswith(prefix):
        raise ExtensionCheckError("check_cmakelists_content",
                                  f"'{url}' is not a file of {metadata['scm_url']} at its revision ({prefix}...)")
    return root / url[len(prefix):]


def check_image_url(url: str, metadata: dict, root: Path) -> str:
    """``validate_image_url``: the URL answers with an image (PNG, JPEG or GIF). The index downloads it and
    reads the Content-Type; offline the URL must name a file of this repository at the catalog's revision
    whose bytes are such an image. Returns the content type."""
    path = _local_image(url, metadata, root)
    if not path.is_file():
        raise ExtensionCheckError("check_cmakelists_content", f"'{url}': {path.relative_to(root)} is not in the "
                                                              "repository")
    head = path.read_bytes()[:8]
    for signature, content_type in IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return content_type
    raise ExtensionCheckError("check_cmakelists_content", f"'{url}' does not point to a valid image")


def check_cmakelists_content(name: str, metadata: dict, root: Path) -> dict:
    """``check_cmakelists_content``: the top-level CMakeLists.txt's ``project()`` is the extension's name,
    and its EXTENSION_ICONURL and EXTENSION_SCREENSHOTURLS are images. Errors are collected and reported
    together, as the index does. Returns what was found."""
    cmake = root / "CMakeLists.txt"
    if not cmake.is_file():
        raise ExtensionCheckError("check_cmakelists_content", "CMakeLists.txt file not found in repository root")
    text = cmake.read_text(encoding="utf-8", errors="ignore")
    errors = []
    project = _cmake_value(text, r'project\s*\(\s*([^\s\)\n\r]+)') or _cmake_value(
        text, r'set\(EXTENSION_NAME\s+([^\s\)]+)\)')
    project = project.strip("\"'") if project else None
    if project is None:
        errors.append("No project() declaration found in CMakeLists.txt")
    elif project != name:
        errors.append(f"Extension name in CMakeLists.txt project name '{project}' does not match extension "
                      f"description file name '{name}'")
    icon = _cmake_value(text, r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)')
    screenshots = _cmake_value(text, r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)')
    if icon is None:
        errors.append("No EXTENSION_ICONURL found in CMakeLists.txt.")
    if screenshots is None:
        errors.append("No EXTENSION_SCREENSHOTURLS found in CMakeLists.txt.")
    urls = ([icon] if icon else []) + (screenshots.split() if screenshots else [])
    for url in urls:
        try:
            check_image_url(url, metadata, root)
        except ExtensionCheckError as error:
            errors.append(str(error))
    if errors:
        raise ExtensionCheckError("check_cmakelists_content", " ".join(errors))
    return {"project": project, "icon": icon, "screenshots": screenshots.split()}


def repository_size_mb(root: Path) -> float:
    """``check_repository_size`` measures its clone: every file under it, ``.git`` included.

    The index clones over the network, so its ``.git`` holds one pack the server computed for the
    clone. A checkout's own object store can hold the same objects several times over (one pack per
    fetch, loose objects), so it is not measured directly: a ``--no-local`` clone of it receives the
    pack a server would send, and its files are summed the way the index sums them.
    """
    with tempfile.TemporaryDirectory(prefix="extension-size-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "--quiet", "--no-local", str(root), str(clone)], capture_output=True,
                       check=True)
        total = sum(path.stat().st_size for path in clone.rglob("*") if path.is_file())
    return total / (1024 * 1024)


def check_repository_size(size_mb: float) -> None:
    """``check_repository_size``: at most 100 MB."""
    if size_mb > SIZE_LIMIT_MB:
        raise ExtensionCheckError("check_repository_size",
                                  f"Repository size {size_mb:.1f} MB exceeds the {SIZE_LIMIT_MB} MB limit.")


def check_license_file(root: Path) -> Path:
    """``check_license_file``: a licence file in the repository root (first of the index's names)."""
    for candidate in LICENSE_NAMES:
        if (root / candidate).is_file():
            return root / candidate
    raise ExtensionCheckError("check_license_file", "No license file found in repository root.")


def check_extension(description: Path, root: Path, size_mb: float | None = None) -> dict:
    """All the offline checks in the index's order for one description file; the first failure raises."""
    name = description.stem
    metadata = check_json_file_format(description)
    check_repository_size(repository_size_mb(root) if size_mb is None else size_mb)
    check_json_schema(metadata)
    check_extension_name(name)
    check_category(metadata)
    check_git_repository_name(metadata)
    check_scm_url_syntax(metadata)
    found = check_cmakelists_content(name, metadata, root)
    found["license"] = check_license_file(root)
    found["metadata"] = metadata
    return found
