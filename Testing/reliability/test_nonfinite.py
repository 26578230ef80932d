"""NaN and Inf (issue 12 item 6): weights holding them are refused at load, and any non-finite model
output or map is an error naming the model, never a NaN heatmap reported as a success."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from XAIExplainLib import cli
from XAIExplainLib.engine import explain_many, explain_volume, predict_volume
from XAIExplainLib.engine.api import explain_batch
from XAIExplainLib.models import WeightsError, explain_image, load_model
import SimpleITK as sitk

from Testing.support.models import classifier
from .hostile import model_folder, network, volume


class NaNOutput(nn.Module):
    """A classifier whose logits overflow to Inf and NaN for bright inputs (log of a negative)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        logits = self.fc(self.conv(x).mean(dim=(2, 3)))
        return torch.log(logits - 1e6)


class NaNGradient(nn.Module):
    """Finite outputs, NaN input gradient: d sqrt(u)/du at u = 0 is 0 / 0."""

    def __init__(self):
        super().__init__()
        self.inner = classifier(dims=2)

    def forward(self, x):
        return self.inner(x) + 0 * torch.sqrt(x - x.detach()).sum()


def test_weights_with_nan_are_refused_at_load_naming_the_tensor(tmp_path):
    state = network().state_dict()
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    with pytest.raises(WeightsError, match=rf"weights\.pt: 1 tensor\(s\) hold NaN or infinite values \({first}\)"):
        load_model(model_folder(tmp_path / "nan", state=state))


def test_weights_with_inf_are_refused_at_load(tmp_path):
    state = network().state_dict()
    key = [k for k in state if k.endswith("weight")][-1]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("inf")
    with pytest.raises(WeightsError, match=rf"1 tensor\(s\) hold NaN or infinite values \({key}\)"):
        load_model(model_folder(tmp_path / "inf", state=state))


def test_a_nan_output_is_an_error_naming_the_model_in_every_entry_point():
    torch.manual_seed(0)
    model = NaNOutput().eval()
    array = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    message = r"model NaNOutput produced \d+ NaN or infinite value\(s\) in its output"
    with pytest.raises(ValueError, match=message):
        predict_volume(model, array)
    with pytest.raises(ValueError, match=r"model NaNOutput produced \d+ NaN or infinite value\(s\) in its "):
        explain_volume(model, array, "saliency", return_outputs=True)
    with pytest.raises(ValueError, match=message):
        explain_batch(model, torch.from_numpy(array[:, None]), ["saliency"], with_output=True)


def test_a_nan_map_is_an_error_naming_the_model_and_method():
    model = NaNGradient().eval()
    x = torch.randn(2, 1, 16, 16)
    assert torch.isfinite(model(x)).all()  # the output is fine; only the gradient is not
    with pytest.raises(ValueError, match=r"model NaNGradient produced 512 NaN or infinite value\(s\) in its "
                                         r"saliency map \(of 512\)"):
        explain_many(model, x, ["saliency"])


def test_explain_image_and_cli_refuse_a_model_gone_non_finite(tmp_path, capsys):
    folder = model_folder(tmp_path / "m")
    loaded = load_model(folder)
    with torch.no_grad():
        loaded.module.features.stem.conv.weight.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"model SliceClassifier produced \d+ NaN or infinite"):
        explain_image(loaded, volume(), methods="gradcam", device="cpu")
    sitk.WriteImage(volume(), str(tmp_path / "v.nrrd"))
    state = network().state_dict()
    state["features.stem.conv.weight"] = torch.full_like(state["features.stem.conv.weight"], float("nan"))
    bad = model_folder(tmp_path / "bad", state=state)
    status = cli.main(["explain", str(tmp_path / "v.nrrd"), "--model", str(bad), "--method", "gradcam",
                       "--output-dir", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "hold NaN or infinite values (features.stem.conv.weight)" in err, err
