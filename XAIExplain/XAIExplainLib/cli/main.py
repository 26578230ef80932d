"""``xaiexplain``: attribution heatmaps for CT/MRI volumes from the command line.

This module only parses arguments and dispatches; the work lives in
the modules of this package.  Every problem a user can fix is printed as one
line ``xaiexplain: error: <file or option>: <problem>`` with exit status 2 and
no traceback (``--debug`` shows it); a batch in which some inputs failed exits
with 1 so that scripts can tell "partly done" from "nothing done".
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

from .errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STATUS_HELP, UserError,
                           one_line)
from .signals import Terminated
from ..imaging.orientation import ORIENTATIONS

#: engine.modes.MODES (importing the engine loads torch, which `--help` must not wait for);
#: Testing/cli checks that the two agree.
ENGINE_MODES = ("slices", "volume")

PROG = "xaiexplain"

_DESCRIPTION = """\
See what a medical-imaging model looks at: attribution heatmaps (Grad-CAM, SAM, CRM, ...)
for CT/MRI volumes, written beside an overlay picture and a run summary."""

_EXPLAIN_EPILOG = """\
INPUT is an image file (NRRD, NIfTI, MHA, ...), a folder with a DICOM series (one input
per series) or with image files, or a text file listing inputs, one per line (# starts
a comment, relative paths are relative to the list file). A model with several input
channels (multi-sequence MRI) takes one file per channel, in its channel order:
t1.nii.gz,t1ce.nii.gz,t2.nii.gz,flair.nii.gz (also as one line of a list file); a folder
in nnU-Net's naming (CASE_0000.nii.gz, CASE_0001.nii.gz, ...) is one input per case.
Outputs land on the first file's grid.

Outputs per input, in --output-dir (every image on the input's exact grid):
  <stem>_<method>[_<class>].<ext>        heatmap in [0, 1]
  <stem>_<method>[_<class>]_label.<ext>  label map (with --label-threshold)
  <stem>_<method>[_<class>].png          overlay montage (with --overlay)
  <stem>_prediction.csv | .<ext>         class scores (classifier) | label map (segmenter)
  <stem>.xaiexplain.json                 what made them (written last: the input is complete)
and for the run: summary.json, summary.csv.
Existing files are never replaced without --overwrite, inputs never. An input's files
appear together or not at all, so an interrupted run (Ctrl-C, SIGTERM, a killed process)
leaves no truncated file; the same command run again skips the complete inputs and
computes the rest.

example (a cohort listed in a file, 4 reader threads, on the GPU):
  xaiexplain explain cohort.txt --model ct-phase-2d --method gradcam --method sam \\
      --overlay --jobs 4 --device cuda --output-dir audit/

example (the same cohort on 4 local Dask workers, one GPU each where there are GPUs):
  xaiexplain explain cohort.txt --model ct-phase-2d --method gradcam --cluster local:4 \\
      --output-dir audit/

""" + EXIT_STATUS_HELP


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; exposed so documentation and tests can inspect it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    common.add_argument("--quiet", "-q", action="store_true",
                        help="no progress and no final report; errors are still printed")

    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=EXIT_STATUS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="explain a generated CT volume with the bundled demo model",
        description="Generate a sample CT volume, explain it with the bundled demo model "
                    "and write heatmaps, overlay pictures and a summary.",
        epilog=EXIT_STATUS_HELP)
    demo.add_argument("--output-dir", metavar="DIR",
                      help="where to write (default: a new folder xaiexplain-output/demo[-N])")
    demo.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                      help="where the model runs (default: auto = CUDA when available)")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.add_argument("--model", default=None, metavar="NAME",
                      help="the bundled model to explain: ct-phase-2d (default) or liver-seg-3d "
                           "(pyliverlesionseg's published liver network; minutes on a CPU)")
    demo.set_defaults(handler=_run_demo)

    explain = commands.add_parser(
        "explain", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="explain image files, DICOM series or a cohort list",
        description="Compute attribution heatmaps of a model for one or many volumes.",
        epilog=_EXPLAIN_EPILOG)
    explain.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image file, DICOM series folder or text file listing inputs")
    _model_options(explain)
    explain.add_argument("--option", action="append", dest="options", metavar="NAME=VALUE",
                         help="an option of a chosen method (repeatable; 'xaiexplain methods' lists "
                              "them), e.g. --option masks=2000 for rise, --option "
                              "composite=epsilon_gamma_box for lrp; VALUE is read as JSON where it "
                              "parses (numbers, true/false, [8, 8, 4]), else as text")
    explain.add_argument("--region", metavar="predicted|MASKFILE",
                         help="segmentation models: the voxels whose class score is explained: "
                              "the predicted region of the class (default) or a mask file on the "
                              "input's grid")
    explain.add_argument("--mode", choices=ENGINE_MODES,
                         help="per-slice (2D model) or volumetric (3D model); default from the "
                              "model card")
    explain.add_argument("--axis", choices=ORIENTATIONS,
                         help="slice direction for per-slice models (default from the card)")
    explain.add_argument("--format", default=None, choices=("nrrd", "nii.gz"),
                         help="image format of the outputs (default: nii.gz for NIfTI inputs, "
                              "nrrd otherwise)")
    explain.add_argument("--label-threshold", metavar="T|otsu",
                         help="also write a label map of heatmap > T (a number in [0, 1)) or > "
                              "Otsu's threshold")
    explain.add_argument("--overlay", action="store_true",
                         help="write a PNG montage: heatmap over the image in three views "
                              "through its peak")
    explain.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                         help="inputs read ahead by N background threads while the current one "
                              "computes (0: read in turn; default 1)")
    explain.add_argument("--memory-budget", type=float, default=None, metavar="MB",
                         help="memory the whole run of one input may use, in megabytes (reading, "
                              "resampling, the model's batches and the restored maps); an input "
                              "that cannot fit is refused up front with the numbers")
    explain.add_argument("--modality", default=None, metavar="CT|MR",
                         help="the input pipeline of a model with one per modality (liver-seg-3d: CT or "
                              "MR); default: each image's DICOM header, else its intensities")
    explain.add_argument("--cluster", metavar="local:N|tcp://HOST:PORT",
                         help="explain the inputs on a Dask cluster: N local worker processes "
                              "(one GPU each where there are GPUs) or an existing scheduler "
                              "(needs the 'cluster' extra; default: in this process)")
    _output_options(explain, "xaiexplain-output")
    explain.set_defaults(handler=_run_explain)

    evaluate = commands.add_parser(
        "evaluate", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="score heatmaps against a reference mask (Dice, pointing game, ...)",
        description="Explain INPUT and score each method's heatmap against MASK with the "
                    "evaluation metrics; writes <stem>_evaluation.csv (a row per method and class) and "
                    "<stem>_evaluation.json in --output-dir, <stem> being INPUT's file name without "
                    "its image ending (lung1_image.nrrd -> lung1_image_evaluation.csv).",
        epilog=EXIT_STATUS_HELP)
    evaluate.add_argument("inputs", nargs=1, metavar="INPUT", help="image file or DICOM folder")
    evaluate.add_argument("--mask", required=True, metavar="MASK",
                          help="reference mask on the input's grid (nonzero = inside)")
    _model_options(evaluate)
    evaluate.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                          help="a metric to compute (repeatable; default: all that apply; "
                               "see 'xaiexplain methods --metrics')")
    evaluate.add_argument("--metric-option", action="append", dest="metric_options", metavar="METRIC.NAME=VALUE",
                          help="an option of a chosen metric that takes its own (repeatable), e.g. "
                               "--metric-option irof.patch_size=16 or --metric-option "
                               "top_k_intersection.k=500; VALUE is read as JSON where it parses")
    _output_options(evaluate, "xaiexplain-output")
    evaluate.set_defaults(handler=_run_evaluate)

    models = commands.add_parser("models", parents=[common], help="list the available models")
    models.set_defaults(handler=_run_models)

    methods = commands.add_parser("methods", parents=[common],
                                  help="list the attribution methods (and evaluation metrics)")
    methods.add_argument("--task", choices=("classification", "segmentation"),
                         help="only methods for this kind of model")
    methods.add_argument("--metrics", action="store_true",
                         help="list the evaluation metrics instead")
    methods.add_argument("--model", metavar="NAME|PATH",
                         help="only the methods that apply to this model (e.g. the attention methods only "
                              "for transformers with global self-attention)")
    methods.add_argument("--trust-model", action="store_true",
                         help="allow loading a --model that needs trust (see 'xaiexplain explain --help')")
    methods.set_defaults(handler=_run_methods)

    serve = commands.add_parser(
        "serve", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the explanation panel as a web page (needs the 'web' extra)",
        description="Serve the explanation panel as a web page on trame-slicer: Slicer's slice "
                    "views of IMAGE with the heatmaps over it, the same choices and runs as the "
                    "Slicer module. Open the printed URL in a browser.",
        epilog=_SERVE_EPILOG)
    serve.add_argument("inputs", nargs="*", metavar="IMAGE",
                       help="images the page offers (the first is shown at start)")
    serve.add_argument("--model", action="append", dest="models", metavar="NAME|PATH",
                       help="a model to offer and preselect (repeatable; bundled models are always "
                            "offered)")
    serve.add_argument("--method", action="append", dest="methods", metavar="METHOD",
                       help="a method to preselect (repeatable)")
    serve.add_argument("--port", type=int, default=8080, metavar="N",
                       help="port to listen on (default 8080; 0: any free port)")
    serve.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                       help="address to bind (default 127.0.0.1, this machine only); any other "
                            "address requires the access token printed in the URL")
    serve.add_argument("--require-token", action="store_true",
                       help="require the access token on loopback too (a machine shared with "
                            "other users)")
    serve.add_argument("--models-dir", metavar="DIR",
                       help="offer the model folders and files in DIR")
    serve.add_argument("--output-dir", metavar="DIR",
                       help="images under DIR may be opened, and 'Save' writes here")
    serve.add_argument("--review", metavar="DIR",
                       help="step through an output folder of 'xaiexplain explain'")
    serve.add_argument("--upload-limit", type=float, default=1024.0, metavar="MB",
                       help="largest upload accepted from the browser (default 1024 MB)")
    serve.set_defaults(handler=_run_serve)
    return parser


_SERVE_EPILOG = """\
The page can open only the images, models and folders named here (and what lies under
--models-dir / --output-dir); it never browses the server's files.

example (a CT ready to explain, on this machine):
  xaiexplain serve lung1_image.nrrd --model lung-nodule-2d --method gradcam

example (a GPU server, viewed from a laptop; open the printed URL with its token):
  xaiexplain serve --host 0.0.0.0 --port 8080 --models-dir models/ --output-dir audit/

""" + EXIT_STATUS_HELP


def _run_serve(args: argparse.Namespace) -> int:
    """Hand over to the web package's own entry point in this process's place: the library's
    dependency direction lets the web face import the command line, never the reverse."""
    import importlib.util

    if importlib.util.find_spec("trame_slicer") is None:
        raise UserError("serve", "needs the web extra: pip install \"xaiexplain[web]\" && "
                                 "pip install --no-deps slicer-layer-dm==2.0.0")
    if importlib.util.find_spec("slicer_layer_dm") is None:
        raise UserError("serve", "trame-slicer's views need slicer-layer-dm: "
                                 "pip install --no-deps slicer-layer-dm==2.0.0")
    given = list(args.argv)
    argv = [sys.executable, "-m", "XAIExplainLib.web", *given[given.index("serve") + 1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return EXIT_OK  # not reached


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME|PATH",
                        help="a bundled or configured model name (see 'xaiexplain models'), "
                             "or a path (./name for a folder in this directory): a model folder, "
                             "card.json, or a TorchScript / state-dict file with a sidecar .json "
                             "describing its input")
    parser.add_argument("--method", action="append", dest="methods", required=True,
                        metavar="METHOD", help="attribution method (repeatable; see "
                                               "'xaiexplain methods')")
    parser.add_argument("--target", action="append", dest="targets", metavar="predicted|per-slice|INT|NAME",
                        help="class to explain: 'predicted' (default; a per-slice classifier explains "
                             "one class for the whole volume: the card's class of interest, else the "
                             "class with the highest probability on any slice), 'per-slice' (each "
                             "slice its own predicted class), a class index or a class name (repeatable)")
    parser.add_argument("--layer", metavar="NAME",
                        help="layer for layer-based methods (default from the model card)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                        help="where the model runs (default: auto = CUDA when available)")
    parser.add_argument("--trust-model", action="store_true",
                        help="allow what can run code or reach outside the model: a pickled "
                             "module, a TorchScript file, an architecture outside the supported "
                             "libraries, files outside the model folder (only for models you trust)")


def _output_options(parser: argparse.ArgumentParser, default_dir: str) -> None:
    parser.add_argument("--output-dir", "-o", default=default_dir, metavar="DIR",
                        help=f"where to write (default: ./{default_dir})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (inputs are never replaced)")


def _version() -> str:
    from .. import __version__

    return __version__


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _run_explain(args: argparse.Namespace) -> int:
    from .explain_command import run_explain

    return run_explain(args)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate_run import run_evaluate

    return run_evaluate(args)


def _run_models(args: argparse.Namespace) -> int:
    from .listing import print_models

    return print_models()


def _run_methods(args: argparse.Namespace) -> int:
    from .listing import print_methods, print_metrics

    if args.metrics:
        return print_metrics()
    model = None
    if args.model is not None:
        from .options import load_model_or_fail

        model = load_model_or_fail(args.model, "cpu", args.trust_model)
    return print_methods(args.task, model=model)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xaiexplain`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except KeyboardInterrupt as exc:
        why = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{PROG}: {why}; outputs already written are complete", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``xaiexplain methods | head``): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UserError as exc:
        return _fail(args, exc, str(exc))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        return _fail(args, exc, f"unexpected {type(exc).__name__}: {one_line(exc)} "
                                "(run with --debug for the traceback)")


def _fail(args: argparse.Namespace, error: BaseException, message: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
