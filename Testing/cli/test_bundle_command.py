"""``xaiexplain explain --model BUNDLE``: a two-channel MONAI bundle fed one two-component volume file.

The reference is the bundle's own pipeline run by MONAI on one file per input key
(Testing/models/test_monai_bundle_forms.py builds the bundle as MONAI writes one).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("monai")
pytest.importorskip("yaml")
import SimpleITK as sitk  # noqa: E402

from Testing.models.test_monai_bundle_forms import (ARGMAX, INVERT, MULTI_KEY_TRANSFORMS, SEGMENTER_2CH,  # noqa: E402
                                                    SOFTMAX, _bundle, _config, _metadata, _run, _volume,
                                                    _write_bundle)
from XAIExplainLib import cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def test_cli_explains_a_two_key_bundle_from_a_two_component_volume(tmp_path, capsys):
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2, "overlap": 0.5}
    bundle = _write_bundle(tmp_path / "bundle", _config(SEGMENTER_2CH, MULTI_KEY_TRANSFORMS, inferer,
                                                        post=(SOFTMAX, INVERT, ARGMAX)),
                           _metadata("tiny-two-sequence", (16, 16, 16), ["background", "tumour"], channels=2))
    image = _volume(shape=(14, 26, 24), spacing=(1.2, 1.0, 2.5), components=2)
    case = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(case))
    out = tmp_path / "out"
    status = cli.main(["explain", "--model", str(bundle), "--trust-model", "--method", "gradcam", "--target",
                       "tumour", "--device", "cpu", "--quiet", "--output-dir", str(out), str(case)])
    assert status == 0, capsys.readouterr().err
    files = []
    for c, key in enumerate(("t1", "t2")):
        files.append(tmp_path / f"{key}.nii.gz")
        sitk.WriteImage(sitk.VectorIndexSelectionCast(image, c), str(files[-1]))
    _, post = _run(_bundle(bundle), {"t1": str(files[0]), "t2": str(files[1])})
    reference = np.transpose(np.asarray(post["pred"])[0], (2, 1, 0))
    prediction = sitk.ReadImage(str(next(out.glob("case*prediction*.nii.gz"))))
    heatmap = sitk.ReadImage(str(next(out.glob("case*gradcam*.nii.gz"))))
    assert 0.02 < reference.mean() < 0.98
    assert (sitk.GetArrayFromImage(prediction) == reference).mean() >= 0.99
    assert heatmap.GetSize() == image.GetSize() and heatmap.GetNumberOfComponentsPerPixel() == 1
