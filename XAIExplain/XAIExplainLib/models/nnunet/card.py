"""The ModelCard of an nnU-Net model, synthesised from its plans, dataset.json and network.

nnU-Net folders carry no card.json; the card says what the rest of XAIExplain needs (task,
dimensions, channels, class names, patch size, layers) and records where it came from.
The default layer is the decoder stage one step below full resolution: close enough to
the output to be specific to the class, coarse enough to show regions rather than edges;
the panel also lists every decoder stage and the bottleneck.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..card import ClassSpec, InputSpec, IntensitySpec, ModelCard, TargetLayers, WeightsSpec
from .labels import ChannelLabels


def stage_layers(network: nn.Module) -> tuple[list[str], list[str]]:
    """Names of ``encoder.stages.N`` and ``decoder.stages.N`` that the network has."""
    names = dict(network.named_modules())
    encoder = [n for n in names if n.startswith("encoder.stages.") and n.count(".") == 2]
    decoder = [n for n in names if n.startswith("decoder.stages.") and n.count(".") == 2]
    return encoder, decoder


def default_layers(network: nn.Module) -> TargetLayers:
    encoder, decoder = stage_layers(network)
    if not decoder:
        return TargetLayers()
    default = decoder[-2] if len(decoder) > 1 else decoder[-1]
    suggested = list(decoder) + encoder[-1:]
    return TargetLayers(default=default, suggested=tuple(dict.fromkeys([default] + suggested)))


def nnunet_card(folder_path: Path, dataset_name: str, configuration: str, configuration_manager,
                channels: int, labels: ChannelLabels, network: nn.Module, checkpoint: Path,
                folds: tuple, trainer: str, channel_names: tuple[str, ...] | None = None,
                previous_stage=None) -> ModelCard:
    """The card; ``previous_stage`` (a cascade's first stage, a LoadedModel) is recorded as the input it adds,
    and ``extra["nnunet"]["explained_stage"]`` says which stage the maps explain."""
    patch = tuple(int(p) for p in configuration_manager.patch_size)
    spacing = tuple(float(s) for s in configuration_manager.spacing)
    extra = {"configuration": configuration, "trainer": trainer, "folds": list(folds),
             "normalization": list(configuration_manager.normalization_schemes), "explained_stage": configuration}
    stage = ""
    if previous_stage is not None:
        first = previous_stage.card.extra["nnunet"]["configuration"]
        extra["previous_stage"] = {"configuration": first, "folder": str(previous_stage.source),
                                   "folds": previous_stage.card.extra["nnunet"]["folds"]}
        stage = (f"; cascade stage 2 of 2: its input is the image plus the one-hot segmentation of the {first} "
                 f"stage ({previous_stage.source}), and the maps explain this {configuration} stage")
    return ModelCard(
        name=f"{dataset_name} {configuration}",
        task="segmentation",
        spatial_dims=len(patch),
        input=InputSpec(channels=channels, spacing=spacing, size=None, patch_size=patch,
                        intensity=IntensitySpec(mode="none"), pad_value=0.0, channel_names=channel_names),
        classes=tuple(ClassSpec(name, value=value) for name, value in zip(labels.names, labels.values)),
        weights=WeightsSpec(file=checkpoint, format="state_dict"),
        target_layers=default_layers(network),
        output_activation=labels.activation,
        description=(f"nnU-Net v2 {trainer}, configuration {configuration}, fold(s) "
                     f"{', '.join(map(str, folds))}; preprocessing, windows and export are nnU-Net's{stage}"),
        folder=folder_path,
        extra={"nnunet": extra},
    )
