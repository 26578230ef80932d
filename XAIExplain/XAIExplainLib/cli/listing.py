"""``xaiexplain models`` and ``xaiexplain methods``: what can be asked for, in a few lines each.

The lists come from the live registries (the model search path, the method
catalogue, the evaluation metrics), so they never disagree with what
``explain`` accepts.
"""
from __future__ import annotations

import sys
import textwrap
from typing import TextIO

from .errors import EXIT_OK

_WIDTH = 100


def print_models(stream: TextIO | None = None) -> int:
    """One paragraph per model found: name, task, dimensions, classes, description."""
    from ..models.search_paths import list_models

    stream = stream or sys.stdout
    found = list_models()
    if not found:
        stream.write("No models found. " + _search_hint() + "\n")
        return EXIT_OK
    for info in found:
        classes = ", ".join(info.classes)
        head = f"{info.name}  ({info.task}, {info.spatial_dims}D; classes: {classes})"
        stream.write(head + "\n")
        if info.description:
            stream.write(textwrap.fill(info.description, _WIDTH, initial_indent="    ",
                                       subsequent_indent="    ") + "\n")
    stream.write("\nUse --model NAME, or --model FOLDER / card.json for a model of your own. "
                 + _search_hint() + "\n")
    return EXIT_OK


def _search_hint() -> str:
    from ..models.search_paths import MODEL_PATH_ENV

    return (f"Models are looked up in the bundled models folder and in the folders listed in "
            f"${MODEL_PATH_ENV}.")


def print_methods(task: str | None = None, stream: TextIO | None = None, model=None) -> int:
    """One entry per method: name, what it computes, which models, whether it needs a layer, what it
    costs (passes through the model per input batch) and its options.

    ``model`` (a LoadedModel): only the methods that apply to it (``MethodInfo.applicable``).
    """
    from ..engine import METHODS

    stream = stream or sys.stdout
    names = sorted(n for n, m in METHODS.items() if task is None or task in m.tasks)
    if model is not None:
        card = model.card
        names = [n for n in names
                 if METHODS[n].applicable(card.task, card.spatial_dims, model.scripted, model.module) is None]
    width = max(len(n) for n in names) + 2
    stream.write("METHOD".ljust(width) + "WHAT IT COMPUTES [models; layer; cost], its options\n")
    for name in names:
        info = METHODS[name]
        tasks = "any model" if len(info.tasks) > 1 else f"{info.tasks[0]} only"
        if info.family == "attention" and model is None:
            tasks += " with global self-attention"
        detail = (f"{info.description} [{tasks}; {'layer' if info.needs_layer else 'no layer'}; "
                  f"cost: {info.cost}]")
        lines = textwrap.wrap(detail, _WIDTH - width)
        if info.options:
            lines.append(f"--option {', '.join(info.options)}")
        stream.write(name.ljust(width) + lines[0] + "\n")
        for line in lines[1:]:
            stream.write(" " * width + line + "\n")
    stream.write("\n[layer: the method uses --layer, or the model card's default layer]\n"
                 "[cost: passes through the model for each batch of slices or windows; K = the layer's channels]\n"
                 "[--option: the method's options, set with xaiexplain explain --option NAME=VALUE]\n")
    return EXIT_OK


def print_metrics(stream: TextIO | None = None) -> int:
    """The metrics ``xaiexplain evaluate --metric`` accepts, as a table with a header: what each needs
    besides the heatmap, and whether ``evaluate`` computes it by default or only when named."""
    from ..evaluation import METRICS
    from ..evaluation.api import ON_REQUEST

    stream = stream or sys.stdout
    header = ("METRIC", "NEEDS (besides the heatmap)", "COMPUTED")
    rows = [(name, ", ".join(needs) if needs else "-", "when named" if name in ON_REQUEST else "by default")
            for name, needs in METRICS.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) + 2 for i in range(2)]
    for row in [header, *rows]:
        stream.write(row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2] + "\n")
    stream.write("\n[needs: mask = the --mask file; model = the model is run again; method = the method is re-run "
                 "on a changed model or input; used = the voxels the model uses (API only); tiles = which tiles "
                 "of a mosaic input show the target (focus; API only, metric_options)]\n"
                 "[when named: costly or duplicate metrics, computed only with --metric NAME]\n")
    return EXIT_OK
