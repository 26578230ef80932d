"""The web face's guards without a browser: paths, tokens, hosts, uploads and the serve command."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainLib.web import security
from XAIExplainLib.web.uploads import read_upload

from .browser import ROOT


def test_only_named_files_and_what_lies_under_named_folders_are_allowed(tmp_path):
    named, root, outside = tmp_path / "named.nrrd", tmp_path / "models", tmp_path / "secret.nrrd"
    for path in (named, outside):
        path.write_bytes(b"x")
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "card.json").write_text("{}")
    allowed = security.AllowedPaths(files=[named], roots=[root])
    assert allowed.check(named) == named.resolve()
    assert allowed.allows(root / "sub" / "card.json")
    for refused in (outside, tmp_path, root / ".." / "secret.nrrd", "/etc/passwd"):
        with pytest.raises(security.AccessError, match="is not one of the images, models or folders"):
            allowed.check(refused)
    link = root / "escape.nrrd"
    os.symlink(outside, link)  # a link under an allowed folder that leads out of it
    assert not allowed.allows(link)
    with pytest.raises(security.AccessError, match="no path given"):
        allowed.check("  ")


def test_hosts_tokens_and_upload_sizes():
    assert security.is_loopback("127.0.0.1") and security.is_loopback("localhost") and security.is_loopback("::1")
    assert not security.is_loopback("0.0.0.0") and not security.is_loopback("192.168.1.4")
    token = security.new_token()
    assert token != security.new_token() and len(token) >= 24
    assert security.token_matches(token, token)
    other = token[:-1] + ("y" if token.endswith("x") else "x")  # differs in its last character, always
    assert not security.token_matches(other, token) and not security.token_matches(None, token)
    security.check_upload_size(10, 10)
    with pytest.raises(security.AccessError, match="more than the 1 MB this server accepts"):
        security.check_upload_size(2 ** 20 + 1, 2 ** 20)


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_uploads_are_read_with_the_command_lines_checks_and_bad_zips_are_refused(tmp_path):
    path = tmp_path / "scan.nrrd"
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    image, name = read_upload("C:\\data\\scan.nrrd", path.read_bytes())
    assert name == "scan" and np.array_equal(sitk.GetArrayFromImage(image), array)
    with pytest.raises(ValueError, match="upload an NRRD, NIfTI"):
        read_upload("notes.txt", b"hello")
    with pytest.raises(Exception, match="empty|truncated|shorter|header|read"):
        read_upload("broken.nrrd", path.read_bytes()[:60])
    with pytest.raises(security.AccessError, match="points outside the archive"):
        read_upload("series.zip", _zip({"../evil.dcm": b"x"}))
    with pytest.raises(security.AccessError, match="unpacks to more than"):
        read_upload("series.zip", _zip({"a.dcm": b"\0" * 5000}), limit=1000)
    with pytest.raises(ValueError, match="holds 0 DICOM series"):
        read_upload("series.zip", _zip({"a.dcm": b"not dicom"}))
    with pytest.raises(ValueError, match="not a readable zip"):
        read_upload("series.zip", b"PK no zip")


def _serve(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "XAIExplain"))
    return subprocess.run([sys.executable, "-m", "XAIExplainLib.cli", "serve", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_serve_bad_arguments_are_one_line_errors(tmp_path):
    pytest.importorskip("trame_slicer")
    pytest.importorskip("slicer_layer_dm")
    run = _serve(str(tmp_path / "missing.nrrd"))
    assert run.returncode == 2
    missing = tmp_path / "missing.nrrd"
    assert run.stderr.strip().splitlines() == [f"xaiexplain serve: error: {missing}: no such image file"]
    run = _serve("--review", str(tmp_path))
    assert run.returncode == 2 and "has no summary.json" in run.stderr and "Traceback" not in run.stderr
    run = _serve("--help")
    assert run.returncode == 0 and "--require-token" in run.stdout and "--review DIR" in run.stdout
