"""Tiny nnU-Net v2 trained-model folders written the way nnU-Net writes them, for the tests and the bench.

``write_nnunet_folder`` writes plans.json, dataset.json and fold_N/checkpoint_final.pth
(the dictionary nnU-Net's trainer saves, numpy scalars in its log included) for a
PlainConvUNet or ResidualEncoderUNet built with nnU-Net's own ``get_network_from_plans``,
for the ``3d_fullres`` configuration or another one (``2d``: 2D convolutions and an in-plane
patch and spacing, as nnU-Net's planner writes it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
CT_PROPERTIES = {"0": {"max": 1800.0, "mean": 60.0, "median": 55.0, "min": -1024.0, "percentile_00_5": -120.0,
                       "percentile_99_5": 250.0, "std": 70.0}}


def architecture(network: str, features=(4, 8, 16), strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
                 kernels=((1, 3, 3), (3, 3, 3), (3, 3, 3))) -> dict:
    n, dims = len(features), len(kernels[0])
    kwargs = {"n_stages": n, "features_per_stage": list(features), "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
              "kernel_sizes": [list(k) for k in kernels], "strides": [list(s) for s in strides],
              "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
              "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    kwargs["n_blocks_per_stage" if network == RESIDUAL else "n_conv_per_stage"] = [1] + [2] * (n - 1)
    return {"network_class_name": network, "arch_kwargs": kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def plans(normalization="CTNormalization", network=PLAIN, patch=(16, 24, 24), spacing=(2.0, 1.0, 1.0),
          transpose=(0, 1, 2), configuration="3d_fullres", **arch) -> dict:
    backward = [int(i) for i in np.argsort(transpose)]
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [30, 40, 40],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose), "transpose_backward": backward,
        "configurations": {configuration: {
            "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [30, 40, 40][-len(patch):],
            "spacing": list(spacing), "normalization_schemes": [normalization], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resample,
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
            "architecture": architecture(network, **arch), "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": CT_PROPERTIES,
    }


def dataset_json(regions: bool = False, channels=("CT",)) -> dict:
    if regions:
        labels, order = {"background": 0, "organ": [1, 2], "lesion": 2}, [1, 2]
    else:
        labels, order = {"background": 0, "organ": 1, "lesion": 2}, None
    out = {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels, "numTraining": 4,
           "file_ending": ".nii.gz"}
    if order:
        out["regions_class_order"] = order
    return out


def build_network(plan: dict, dataset: dict, seed: int, configuration: str = "3d_fullres"):
    """The network nnU-Net's predictor would build, with weights drawn from ``seed``."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plan)
    config = manager.get_configuration(configuration)
    heads = manager.get_label_manager(dataset).num_segmentation_heads
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                         config.network_arch_init_kwargs_req_import,
                                         determine_num_input_channels(manager, config, dataset), heads,
                                         deep_supervision=False)
        with torch.no_grad():  # He init leaves biases at zero; spread them so classes differ
            for name, param in network.named_parameters():
                if name.endswith("bias"):
                    param.normal_(0, 0.3)
    return network.eval()


def checkpoint_dict(network, plan, dataset, fold, trainer="nnUNetTrainer", configuration="3d_fullres") -> dict:
    return {"network_weights": network.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
            "logging": {"train_losses": [np.float64(0.9), np.float64(0.7)], "mean_fg_dice": [np.float64(0.4)],
                        "dice_per_class_or_region": [[np.float32(0.3), np.float32(0.5)]]},
            "_best_ema": np.float64(0.41), "current_epoch": 2,
            "init_args": {"plans": plan, "configuration": configuration, "fold": fold, "dataset_json": dataset,
                          "device": torch.device("cpu")},
            "trainer_name": trainer,
            "inference_allowed_mirroring_axes": tuple(range(len(_configuration(plan, configuration)["patch_size"])))}


def _configuration(plan: dict, name: str) -> dict:
    """A configuration of the plans with what it inherits (nnU-Net's ``inherits_from``)."""
    entry = plan["configurations"][name]
    parent = entry.get("inherits_from")
    return {**(_configuration(plan, parent) if parent else {}), **entry}


def write_nnunet_folder(path, folds=(0,), regions=False, channels=("CT",), trainer="nnUNetTrainer",
                        checkpoint="checkpoint_final.pth", configuration="3d_fullres", plan=None, dataset=None,
                        **plan_options) -> Path:
    """A trained-model folder under ``path``; fold f's weights come from seed 100 + f (``"all"``: 100).

    ``plan`` / ``dataset`` replace the plans and dataset.json written from the other options
    (a plans.json with several configurations, a dataset with many labels)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan = plan or plans(configuration=configuration, **plan_options)
    dataset = dataset or dataset_json(regions, channels)
    (path / "plans.json").write_text(json.dumps(plan, indent=1))
    (path / "dataset.json").write_text(json.dumps(dataset, indent=1))
    for fold in folds:
        (path / f"fold_{fold}").mkdir(exist_ok=True)
        network = build_network(plan, dataset, 100 + (0 if fold == "all" else fold), configuration)
        torch.save(checkpoint_dict(network, plan, dataset, fold, trainer, configuration),
                   path / f"fold_{fold}" / checkpoint)
    return path


def cascade_plans(**options) -> dict:
    """Plans with nnU-Net's cascade: ``3d_lowres`` (coarser spacing, ``next_stage``) and ``3d_cascade_fullres``
    (inherits 3d_fullres, ``previous_stage`` 3d_lowres), as nnU-Net's planner writes them."""
    plan = plans(**options)
    fullres = plan["configurations"]["3d_fullres"]
    plan["configurations"]["3d_lowres"] = {**fullres, "data_identifier": "nnUNetPlans_3d_lowres",
                                           "spacing": [2 * s for s in fullres["spacing"]],
                                           "next_stage": ["3d_cascade_fullres"]}
    plan["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres",
                                                    "data_identifier": "nnUNetPlans_3d_fullres"}
    return plan


def write_cascade(dataset_folder, folds=(0,), **options) -> tuple[Path, Path]:
    """``(lowres folder, cascade folder)`` side by side in ``dataset_folder``, as nnU-Net trains them."""
    dataset_folder = Path(dataset_folder)
    plan = cascade_plans(**options)
    lowres = write_nnunet_folder(dataset_folder / "nnUNetTrainer__nnUNetPlans__3d_lowres", folds, plan=plan,
                                 configuration="3d_lowres")
    cascade = write_nnunet_folder(dataset_folder / "nnUNetTrainer__nnUNetPlans__3d_cascade_fullres", folds,
                                  plan=plan, configuration="3d_cascade_fullres")
    return lowres, cascade


def ct_image(shape=(20, 36, 30), spacing=(0.8, 0.9, 2.5), seed=0, oblique=False) -> sitk.Image:
    """A small CT-like volume (HU) with a zero border nnU-Net crops away; spacing in SimpleITK (x, y, z) order."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (y ** 2 + x ** 2) < 0.8
    array = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, shape)
    array[((z - 0.1) ** 2 + (y + 0.2) ** 2 + (x - 0.1) ** 2) < 0.12] = 160.0
    array[((z + 0.3) ** 2 + (y - 0.3) ** 2 + (x + 0.3) ** 2) < 0.05] = -60.0
    array[:, :2] = 0.0
    array[:, :, -3:] = 0.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.0, 30.5, 101.0))
    if oblique:
        angle = np.deg2rad(20)
        c, s = np.cos(angle), np.sin(angle)
        image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return image


def nnunet_prediction(folder, image: sitk.Image, folds, checkpoint="checkpoint_final.pth", mirroring=False,
                      previous_stage=None):
    """nnU-Net's own prediction (segmentation, probabilities) of ``image`` as its predictor makes it
    (``previous_stage``: a cascade's first-stage segmentation, a numpy array on the image's grid)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=tuple(folds), checkpoint_name=checkpoint)
    array = sitk.GetArrayFromImage(image)[None].astype(np.float32)
    properties = {"spacing": list(image.GetSpacing())[::-1]}
    return predictor.predict_single_npy_array(array, properties, previous_stage, None, True)
