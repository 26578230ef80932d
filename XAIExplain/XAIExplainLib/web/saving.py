""""Save": the page's current choices written to ``--output-dir`` exactly as ``xaiexplain explain`` writes them.

The run goes through the command line's own :func:`~XAIExplainLib.cli.explain_cohort` (same
file names, label maps, prediction files, manifest and ``summary.json``), so a saved folder
is one that ``xaiexplain serve --review`` and every script reading the command line's
outputs understand. It computes again rather than exporting the scene's nodes: the command
line's files are defined by its own pipeline, and one definition is kept. An uploaded image
is first written into ``uploads/`` of the output folder, so the summary names a file that
stays.
"""
from __future__ import annotations

from pathlib import Path


def cohort_arguments(state) -> dict:
    """The page's choices as :func:`explain_cohort` keywords; ValueError for what the command line lacks."""
    from ..logic.choices import label_threshold_argument

    target = state.target or ""
    if target in ("point", "roi"):
        raise ValueError("a point or segment target has no command-line form; choose a class or the predicted "
                         "class to save")
    mode = state.mode or ""
    cli_mode, axis = (("slices", mode) if mode in ("axial", "coronal", "sagittal")
                      else ("volume", None) if mode == "volume" else (None, None))
    return dict(targets=[target] if target else None, layer=state.layer or None, mode=cli_mode, axis=axis,
                device=state.device or "auto",
                label_threshold=label_threshold_argument(state.label_choice, state.label_fixed))


def input_file(volume_node, source: str | None, output_dir: Path) -> Path:
    """The image file the command line reads: the opened file, or the upload written under uploads/."""
    if source:
        return Path(source)
    import SimpleITK as sitk

    from ..mrml import volume_to_sitk

    folder = Path(output_dir) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{volume_node.GetName()}.nrrd"
    sitk.WriteImage(volume_to_sitk(volume_node), str(path), True)
    return path


def save(model: str, methods, image: Path, output_dir: Path, trust: bool, **arguments):
    """Run the command line's explain into ``output_dir``; returns its summary (a worker thread calls this)."""
    from ..cli import explain_cohort

    return explain_cohort(model, [str(image)], str(output_dir), list(methods), trust=trust, **arguments)
