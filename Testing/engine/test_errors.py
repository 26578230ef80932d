"""Bad input gets a clear ValueError / TypeError that says what was wrong and what is accepted."""
import numpy as np
import pytest
import torch

import XAIExplainLib as xai
from Testing.support.models import SmallCNN, inputs, make


@pytest.fixture
def model():
    return make(SmallCNN)


def test_wrong_number_of_dims(model):
    with pytest.raises(ValueError, match=r"x must have 4 dims .* got shape \(1, 16, 16\)"):
        xai.explain(model, torch.zeros(1, 16, 16), "gradcam")


def test_2d_model_given_a_3d_input(model):
    with pytest.raises(ValueError, match="expects a 2D"):
        xai.explain(model, torch.zeros(1, 1, 8, 8, 8), "gradcam")


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match=r"expects 1 input channel\(s\).*got 3"):
        xai.explain(model, torch.zeros(2, 3, 16, 16), "gradcam")


def test_nan_and_inf(model):
    x = inputs()
    x[0, 0, 1, 1] = float("nan")
    x[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="2 NaN or infinite values"):
        xai.explain(model, x, "gradcam")


def test_large_finite_values_are_not_mistaken_for_infinite(model):
    """The finite check sums first: a sum that overflows float32 must still count 0 bad values."""
    x = torch.full((2, 1, 16, 16), 3e38)
    assert not torch.isfinite(x.sum())
    xai.explain(model, x, "gradcam")   # no error: every value is finite
    x[1, 0, 3, 3] = -float("inf")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        xai.explain(model, x, "gradcam")


def test_numpy_instead_of_tensor(model):
    with pytest.raises(TypeError, match="torch.from_numpy"):
        xai.explain(model, np.zeros((1, 1, 16, 16), np.float32), "gradcam")


def test_integer_tensor(model):
    with pytest.raises(TypeError, match="floating-point"):
        xai.explain(model, torch.zeros(1, 1, 16, 16, dtype=torch.int16), "gradcam")


def test_unknown_method_lists_the_available_ones(model):
    with pytest.raises(ValueError, match="unknown method 'gradcam2'.*gradcampp.*hirescam"):
        xai.explain(model, inputs(), "gradcam2")


@pytest.mark.parametrize("methods, match", [
    (["gradcam", "hirescam", "gradcam"], "method 'gradcam' is asked for twice; give each method once"),
    ([], "no method given: give a method name or a non-empty list of names; available methods: "),
    (["gradcam", "nope"], "unknown method 'nope'; available methods: "),
])
def test_every_entry_point_checks_a_method_list_by_one_rule(model, methods, match):
    """explain_many, explain_volume and the registry give one message and one duplicate policy
    (before: the engine dropped a repeated method silently while the logic refused it)."""
    from XAIExplainLib.engine.registry import MethodChoiceError, check_methods

    for call in (lambda: check_methods(methods), lambda: xai.explain_many(model, inputs(), methods),
                 lambda: xai.explain_volume(model, np.zeros((4, 16, 16), np.float32), methods)):
        with pytest.raises(MethodChoiceError, match=match):
            call()


def test_target_out_of_range(model):
    with pytest.raises(ValueError, match=r"target class 3 is out of range: the model has 3 output classes \(0..2\)"):
        xai.explain(model, inputs(), "gradcam", target=3)
    with pytest.raises(ValueError, match="target class -1"):
        xai.explain(model, inputs(n=2), "gradcam", target=[0, -1])


def test_target_count_must_match_the_batch(model):
    with pytest.raises(ValueError, match="got 3 targets for a batch of 4 samples"):
        xai.explain(model, inputs(n=4), "gradcam", target=[0, 1, 2])


def test_target_of_the_wrong_type(model):
    with pytest.raises(TypeError, match="target must be None"):
        xai.explain(model, inputs(), "gradcam", target="cat")
    with pytest.raises(TypeError, match="integer class indices"):
        xai.explain(model, inputs(n=2), "gradcam", target=[0.5, 1.0])


def test_layer_that_does_not_exist_lists_names(model):
    with pytest.raises(ValueError, match="no layer named 'features.9'; available layers: features, features.0"):
        xai.explain(model, inputs(), "gradcam", layer="features.9")


def test_layer_without_spatial_output(model):
    with pytest.raises(ValueError, match=r"layer 'fc' has output \(4, 3\) with no spatial dims"):
        xai.explain(model, inputs(), "gradcam", layer="fc")


def test_shared_module_called_twice_is_refused():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
            self.relu = torch.nn.ReLU()
            self.fc = torch.nn.Linear(1, 2)

        def forward(self, x):
            x = self.relu(self.conv(x))
            x = self.relu(x - 0.1)
            return self.fc(x.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="'relu' runs 2 times"):
        xai.explain(Shared(), inputs(), "gradcam", layer="relu")


def test_foreign_module_as_layer(model):
    with pytest.raises(ValueError, match="not part of this model"):
        xai.explain(model, inputs(), "gradcam", layer=torch.nn.Conv2d(1, 1, 1))


def test_unknown_option(model):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['steps'\] for method\(s\) \['gradcam'\]"):
        xai.explain(model, inputs(), "gradcam", steps=10)


def test_not_a_model():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        xai.explain(lambda x: x, inputs(), "gradcam")


def test_volume_errors(model):
    with pytest.raises(ValueError, match="mode must be 'slices'"):
        xai.explain_volume(model, np.zeros((4, 8, 8), np.float32), "gradcam", mode="axial")
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        xai.explain_volume(model, np.zeros((4, 8, 8), np.float32), "gradcam", axis=3)
    with pytest.raises(ValueError, match=r"volume must have shape \(Z, Y, X\) or \(C, Z, Y, X\)"):
        xai.explain_volume(model, np.zeros((8, 8), np.float32), "gradcam")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        xai.explain_volume(model, np.zeros((4, 8, 8), np.float32), "gradcam", device="cuda")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        xai.explain_volume(model, np.zeros((4, 8, 8), np.float32), "gradcam", batch_size=0)


def test_layer_methods_on_a_script_module_name_the_methods_that_work():
    """layer=None on a ScriptModule ended in torch's 'register_forward_hook is not supported on ScriptModules'."""
    model = torch.jit.script(make(SmallCNN))
    x = inputs()
    for method in ("gradcam", "guided_backprop", "scorecam"):
        with pytest.raises(ValueError, match=rf"method '{method}' needs hooks on the network's layers, which a "
                                             r"TorchScript module does not allow; methods that work on TorchScript: "
                                             r"saliency, input_x_gradient, gradient_shap, occlusion, rise, smoothgrad, integrated_gradients"):
            xai.explain(model, x, method)
    assert xai.explain(model, x, "saliency").shape == (4, 16, 16)
