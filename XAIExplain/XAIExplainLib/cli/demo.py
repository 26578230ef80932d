"""``xaiexplain demo``: the whole pipeline on a generated CT, out of the box, in seconds.

A fresh install has no data and no model of the user's, so the demo makes
both: a procedural abdominal CT in the arterial contrast phase (deterministic,
no download) and the bundled contrast-phase classifier.  It then runs exactly
the code path of ``xaiexplain explain`` (Grad-CAM and saliency, overlays,
summary) and says where everything is.  Without ``--output-dir`` each run
gets a new folder, so running it twice never trips over the no-overwrite rule.

``--model liver-seg-3d`` explains the real, published liver network of
pyliverlesionseg (Tang et al. 2020) on the same phantom instead: Grad-CAM of
its liver class (a 3D segmenter: minutes on a CPU, seconds on a GPU).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import UserError
from .writing import OutputFolder

#: The bundled model the demo explains, and what it is shown.
DEMO_MODEL = "ct-phase-2d"
DEMO_METHODS = ("gradcam", "saliency")
#: The bundled models the demo can explain on its abdominal phantom, with their methods.
#: The liver segmenter gets Grad-CAM alone: saliency needs a full backward pass through a
#: 189 x 162 x 162 segment, which on a CPU would multiply the demo's time.
DEMO_CHOICES = {DEMO_MODEL: DEMO_METHODS, "liver-seg-3d": ("gradcam",)}
DEMO_PHASE = "arterial"
DEMO_SEED = 7
DEMO_SAMPLE = "sample_abdomen_ct.nrrd"
DEFAULT_PARENT = Path("xaiexplain-output")


def run_demo(args: argparse.Namespace, stdout=None, stderr=None) -> int:
    """Generate the sample volume, explain it, and print where the outputs are."""
    from .explain_command import run_explain

    stdout = stdout or sys.stdout
    started = time.monotonic()
    model = getattr(args, "model", None) or DEMO_MODEL
    methods = _demo_methods(model)
    _check_bundled_model(model)
    folder = Path(args.output_dir) if args.output_dir else fresh_folder(DEFAULT_PARENT / "demo")
    out = OutputFolder(folder, overwrite=args.overwrite)
    out.prepare()
    out.check_free([DEMO_SAMPLE])
    if not args.quiet:
        print(f"Generating a sample abdominal CT ({DEMO_PHASE} phase) ...", file=stdout,
              flush=True)
    sample = out.write_image(sample_volume(), DEMO_SAMPLE)
    overlay = _can_draw()
    if not overlay and not args.quiet:
        print("matplotlib is not installed: no overlay pictures (pip install matplotlib)",
              file=stdout)
    explain = argparse.Namespace(
        inputs=[str(sample)], model=model, methods=list(methods), targets=None,
        region=None, layer=None, mode=None, axis=None, device=args.device,
        output_dir=str(folder), format="nrrd", label_threshold=None, overlay=overlay, jobs=0,
        quiet=args.quiet, overwrite=args.overwrite, debug=args.debug, trust_model=False)
    status = run_explain(explain, stdout=stdout, stderr=stderr)
    if not args.quiet:
        pictures = sorted(p.name for p in folder.glob("*.png"))
        print(f"Demo finished in {time.monotonic() - started:.1f} s.", file=stdout)
        if pictures:
            print(f"Open the overlay pictures: {', '.join(str(folder / p) for p in pictures)}",
                  file=stdout)
        print(f"Heatmaps (.nrrd) load into 3D Slicer over {sample}. Next: xaiexplain explain "
              f"YOUR_CT.nrrd --model {model} --method gradcam --overlay", file=stdout)
    return status


def sample_volume():
    """The demo's CT: a deterministic abdominal phantom (int16 HU, 5 mm slices)."""
    try:
        from ..imaging.phantoms import abdominal_phantom
    except ImportError as exc:  # scipy is what a minimal install may lack
        raise UserError("demo", f"cannot generate the sample volume ({exc})") from exc
    return abdominal_phantom(seed=DEMO_SEED, phase=DEMO_PHASE).image()


def _demo_methods(model: str) -> tuple[str, ...]:
    """The methods the demo shows for ``model``; a model the demo cannot explain is a one-line error."""
    if model not in DEMO_CHOICES:
        raise UserError("demo", f"--model {model!r} is not a demo model; the demo explains its abdominal "
                                f"CT phantom with {' or '.join(DEMO_CHOICES)} (use 'xaiexplain explain' for "
                                "other models and your own images)")
    return DEMO_CHOICES[model]


def _check_bundled_model(model: str = DEMO_MODEL) -> None:
    """Fail before writing anything when the installation lacks the demo model."""
    from ..models import list_models

    if model not in {m.name for m in list_models()}:
        raise UserError("demo", f"the bundled model '{model}' is missing from this "
                                "installation (XAIExplain/Resources/Models); reinstall the "
                                "package")


def _can_draw() -> bool:
    """Whether matplotlib (for the overlay pictures) is importable."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def fresh_folder(base: Path) -> Path:
    """``base`` if it is absent or empty, else the first ``base-N`` that is."""
    candidate, number = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate
