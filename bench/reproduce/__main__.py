"""Reproduction report: do the seed papers' claims hold on XAIExplain's bundled models?

Runs the applicable methods on the bundled models over fresh phantoms (whose
ground-truth masks say where the evidence is) and on the real CT in the shared
data folder, and writes ``report.md`` (tables, figures, verdicts), the PNG
figures next to it and ``results.json``.

    python -m bench.reproduce                      # full report (under 20 minutes on one CPU thread)
    python -m bench.reproduce --quick              # every section on a few samples (under 90 s)
    python -m bench.reproduce --sections ajr2018,crm2019 --out /tmp/report --seed 7

Sections (paper -> module): ajr2018 (Philbrick et al., SAM), crm2019 (Kim et
al., CRM), spie2022 (Mullan & Sonka, multi-layer maps and KWC), eiecs2021
(Xiao et al., thresholded Grad-CAM for segmentation), guan2022 (Guan & Loew,
arXiv 2201.02771: heatmap Dice and retraining on filtered images), sanity
(Adebayo et al. model randomisation for every method).  A section whose model
or data is missing is skipped with the reason; a section that fails is
reported as an error and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback
from pathlib import Path

from .common import DEFAULT_OUT, DEFAULT_SEED, ROOT, USED_SEEDS, Context, Section, Skip

SECTIONS = {
    "ajr2018": "ajr2018",
    "crm2019": "crm2019",
    "spie2022": "spie2022",
    "eiecs2021": "eiecs2021",
    "guan2022": "guan2022",
    "sanity": "sanity",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few samples per section (CI, < 90 s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="base seed of the evaluation phantoms (sections add small offsets); "
                             "seeds used to train or validate the models are refused")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared CPU, 2 threads competing with other "
                             "jobs made a small forward pass 40x slower than 1 thread)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder with the real images (lung1_image.nrrd, lung1_label.nrrd); without it the "
                             "real-CT parts are skipped")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = chosen
    clashes = sorted({args.seed + k for k in range(8)} & USED_SEEDS)
    if args.seed < 0 or clashes:
        parser.error(f"--seed {args.seed} would reuse a training/validation seed {clashes}; pick another")
    return args


def run_section(name: str, ctx: Context) -> Section:
    module = importlib.import_module(f"{__package__}.{SECTIONS[name]}")
    started = time.perf_counter()
    ctx.log(f"[{name}] {module.TITLE}")
    try:
        section = module.run(ctx)
    except Skip as reason:
        section = Section(module.KEY, module.TITLE, paper=getattr(module, "PAPER", ""), claim="",
                          skipped=str(reason))
    except Exception as error:  # report it, keep the other sections
        traceback.print_exc()
        section = Section(module.KEY, module.TITLE, paper=getattr(module, "PAPER", ""), claim="",
                          error=f"{type(error).__name__}: {error}")
    section.seconds = time.perf_counter() - started
    state = section.error or section.skipped or ", ".join(str(v.holds) for v in section.verdicts)
    ctx.log(f"[{name}] {section.seconds:.1f} s: {state}")
    return section


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        from . import figures
        figures.DPI = 60
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = None
    if args.data is not None:
        if not (args.data / "lung1_image.nrrd").is_file():
            raise SystemExit(f"--data {args.data}: no lung1_image.nrrd there")
        data_dir = args.data
    ctx = Context(quick=args.quick, out=args.out, seed=args.seed, data_dir=data_dir,
                  log=lambda line: print(line, flush=True))
    sections = [run_section(name, ctx) for name in args.sections]
    from .report import summary_table, write_json, write_markdown

    meta = {"quick": args.quick, "seed": args.seed, "sections": args.sections, "threads": args.threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "real_data": "lung1 (pyradiomics test data)" if data_dir else "not available (real-CT parts skipped)",
            "models": dict(ctx.models_used), "seconds": time.perf_counter() - started}
    report = write_markdown(args.out / "report.md", sections, meta)
    write_json(args.out / "results.json", sections, meta)
    (args.out / "summary.md").write_text(summary_table(sections) + "\n", encoding="utf-8")
    print(f"report: {report} ({meta['seconds']:.0f} s)")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
