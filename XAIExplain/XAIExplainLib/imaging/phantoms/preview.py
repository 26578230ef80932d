"""A picture of the phantoms: the four contrast phases of one abdomen and a chest with a nodule.

    python -m XAIExplainLib.imaging.phantoms.preview phantoms.png

Needs matplotlib (only for this picture; the generators do not).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import PHASES, Nodule, abdominal_phantom, chest_phantom

TITLES = {"non_contrast": "non-contrast", "arterial": "arterial", "portal_venous": "portal venous",
          "delayed": "delayed"}


def render_preview(path: str | Path, seed: int = 4, dpi: int = 80) -> Path:
    """Write a 2 x 3 panel PNG: abdomen in four phases (soft-tissue window), chest (lung window)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the preview picture needs matplotlib (pip install matplotlib)") from exc
    grid = dict(shape=(1, 320, 320), spacing=(3.0, 1.2, 1.2), noise=10.0)
    abdomen = [abdominal_phantom(seed=seed, phase=p, center=(0, 10, 8), **grid) for p in PHASES]
    nodule = Nodule(center=(-75.0, -10.0, 25.0), diameter=18.0, kind="solid", margin="spiculated",
                    hu=35.0)
    from .nodules import random_nodule

    nodule = random_nodule(np.random.default_rng(seed), nodule.center, (18.0, 18.0), ("solid",),
                           ("spiculated",))
    chest = chest_phantom(seed=seed, nodules=[nodule], center=(0, 5, 25), shape=(1, 300, 300),
                          spacing=(2.0, 1.15, 1.15), noise=12.0)
    fig, axes = plt.subplots(2, 3, figsize=(15, 10.4), facecolor="black")
    panels = [(ph.array[0], (-160, 240), f"abdomen, {TITLES[p]}") for ph, p in zip(abdomen, PHASES)]
    panels.insert(2, (chest.array[0], (-1100, 300), "chest, lung window"))
    panels.append((chest.array[0], (-160, 240), "chest, mediastinal window"))
    for ax, (array, (low, high), title) in zip(axes.flat, panels):
        ax.imshow(array, cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
        ax.set_title(title, color="white", fontsize=13)
        ax.axis("off")
    mask = chest.mask("nodule")[0]
    axes.flat[2].contour(mask, levels=[0.5], colors=["#ff5a3c"], linewidths=1.0)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="black")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m XAIExplainLib.imaging.phantoms.preview")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    print(render_preview(args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
