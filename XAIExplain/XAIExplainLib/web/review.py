"""``--review DIR``: step through an output folder of ``xaiexplain explain`` to audit a cohort by eye.

``summary.json`` is read as untrusted data: only its rows of successful inputs are used, each
output must be a plain file name inside the folder (no separators, no ``..``), and the input
must still be a readable image. Each step replaces the scene's content with one input, its
heatmaps (Inferno, as the logic shows them), its label maps and its prediction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SUMMARY = "summary.json"
IMAGE_ENDINGS = (".nrrd", ".nii.gz", ".nii", ".mha")


@dataclass(frozen=True)
class ReviewItem:
    """One input of the run: its image, maps, label maps, prediction and the summary's scores."""

    stem: str
    input: Path
    maps: tuple
    labels: tuple
    prediction: str         # a label-map file of a segmenter, or ""
    scores: str             # the summary's prediction, one line


def _image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_ENDINGS)


def read_review(folder) -> list:
    """The reviewable inputs of ``folder``'s summary, in the run's order; ValueError says what is wrong."""
    folder = Path(folder)
    path = folder / SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"'{folder}' has no {SUMMARY}: review an output folder of 'xaiexplain explain'") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"'{path}' is not a readable run summary ({error})") from None
    rows = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"'{path}' lists no inputs")
    items = []
    for row in rows:
        if not isinstance(row, dict) or row.get("status") != "ok":
            continue
        outputs = [str(name) for name in row.get("outputs") or [] if isinstance(name, str)]
        for name in outputs:
            if Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"'{path}': output '{name}' is not a file name inside the folder")
        images = [name for name in outputs if _image_name(name) and (folder / name).is_file()]
        labels = tuple(folder / n for n in images if "_label." in n)
        prediction = next((folder / n for n in images if "_prediction." in n), "")
        maps = tuple(folder / n for n in images if "_label." not in n and "_prediction." not in n)
        items.append(ReviewItem(stem=str(row.get("stem", "")), input=Path(str(row.get("input", ""))), maps=maps,
                                labels=labels, prediction=str(prediction), scores=_scores(row.get("prediction"))))
    if not items:
        raise ValueError(f"'{path}' has no successfully explained input to review")
    return items


def _scores(prediction) -> str:
    if not isinstance(prediction, dict):
        return ""
    parts = []
    for key, value in prediction.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
            parts.append(f"{key}: {inner}")
        elif isinstance(value, (int, float, str)):
            parts.append(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return "; ".join(parts)


class Review:
    """The page's review mode: loads one item at a time into the scene through the bridge."""

    def __init__(self, bridge, folder):
        self.bridge, self.folder = bridge, Path(folder)
        self.items = read_review(self.folder)
        self.index = 0
        state = bridge.state
        state.review_items = [item.stem for item in self.items]
        state.review_title = f"Review of {self.folder.name}"
        bridge.server.controller.review_step = self.step

    def step(self, delta=0) -> None:
        self.index = (self.index + int(delta)) % len(self.items)
        self.show(self.index)

    def show(self, index: int) -> None:
        from ..cli.discovery import image_stem
        from ..cli.reading import read_image
        from ..mrml import colors, display, naming, sitk_to_volume

        bridge, item = self.bridge, self.items[index]
        scene = bridge.scene
        try:
            image = read_image(item.input, str(item.input))
            maps = [(path, read_image(path, str(path))) for path in item.maps]
            labels = [(path, read_image(path, str(path))) for path in item.labels]
        except Exception as error:  # noqa: BLE001 - one line for the page
            bridge._fail(f"Cannot show '{item.stem}': {str(error).splitlines()[0]}")
            return
        bridge.clear_volumes()
        volume = bridge.load_sitk(image, item.stem)
        heat = colors.heat_color_node(scene)
        first = None
        for path, values in maps:
            node = sitk_to_volume(scene, values, image_stem(path))
            method = image_stem(path)[len(item.stem) + 1:]
            naming.tag_output(node, volume, "heatmap", f"review|{path.name}", Method=method)
            display.configure_heatmap_display(node, heat)
            first = first or node
        label_node = None
        for path, values in labels:
            label_node = sitk_to_volume(scene, values, image_stem(path), class_name="vtkMRMLLabelMapVolumeNode")
            display.configure_label_display(label_node, scene=scene, outline=True)
        display.show_in_slice_views(scene, background=volume, foreground=first,
                                    opacity=float(bridge.state.opacity), label=label_node)
        bridge.refresh_heatmaps(first)
        bridge.state.review_index = index
        bridge.state.review_summary = (f"{item.stem}: {len(maps)} map(s), {len(labels)} label map(s)"
                                       + (f"; prediction {item.scores}" if item.scores else ""))
        bridge.scene_app.render()
