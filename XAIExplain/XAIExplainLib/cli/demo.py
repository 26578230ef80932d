"""``xaiexplain demo``: the whole pipeline on a generated CT, out of the box, in seconds.

A fresh install has no data and no model of the user's, so the demo makes
both: a procedural abdominal CT in the arterial contrast phase (deterministic,
no download) and the bundled contrast-phase classifier.  It then runs exactly
the code path of ``xaiexplain explain`` (Grad-CAM and saliency, overlays,
summary) and says where everything is.  Without ``--output-dir`` each run
gets a new folder, so running it twice never trips over the no-overwrite rule.
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
DEMO_PHASE = "arterial"
DEMO_SEED = 7
DEMO_SAMPLE = "sample_abdomen_ct.nrrd"
DEFAULT_PARENT = Path("xaiexplain-output")


def run_demo(args: argparse.Namespace, stdout=None, stderr=None) -> int:
    """Generate the sample volume, explain it, and print where the outputs are."""
    from .explain_command import run_explain

    stdout = stdout or sys.stdout
    started = time.monotonic()
    _check_bundled_model()
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
        inputs=[str(sample)], model=DEMO_MODEL, methods=list(DEMO_METHODS), targets=None,
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
              f"YOUR_CT.nrrd --model {DEMO_MODEL} --method gradcam --overlay", file=stdout)
    return status


def sample_volume():
    """The demo's CT: a deterministic abdominal phantom (int16 HU, 5 mm slices)."""
    try:
        from ..imaging.phantoms import abdominal_phantom
    except ImportError as exc:  # scipy is what a minimal install may lack
        raise UserError("demo", f"cannot generate the sample volume ({exc})") from exc
    return abdominal_phantom(seed=DEMO_SEED, phase=DEMO_PHASE).image()


def _check_bundled_model() -> None:
    """Fail before writing anything when the installation lacks the demo model."""
    from ..models import list_models

    if DEMO_MODEL not in {m.name for m in list_models()}:
        raise UserError("demo", f"the bundled model '{DEMO_MODEL}' is missing from this "
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
