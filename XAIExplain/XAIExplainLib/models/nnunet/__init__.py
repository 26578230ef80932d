"""nnU-Net v2 trained-model folders as XAIExplain models.

    from XAIExplainLib.models.nnunet import load_nnunet
    model = load_nnunet("Dataset003_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres", folds=(0, 1))

nnU-Net's own code (the optional ``nnunetv2`` package, the ``nnunet`` extra)
builds the network from the plans, preprocesses the image and maps results back; the
engine runs nnU-Net's sliding windows (``volume_options``). Nothing here imports
``nnunetv2`` before a folder is actually loaded.
"""
from .folder import is_nnunet_folder
from .loader import load_nnunet

__all__ = ["is_nnunet_folder", "load_nnunet"]
