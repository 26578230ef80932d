"""PNG figures of the reproduction report: map overlays, bar charts, curves (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

#: Resolution of every figure; the quick run lowers it (saving PNGs is a large share of its time).
DPI = 110

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def for_display(heat, percentile: float = 99.5) -> np.ndarray:
    """A [0, 1] map rescaled so its ``percentile``-th value is full scale (sparse gradient maps stay visible)."""
    heat = np.clip(np.asarray(heat, float), 0, None)
    positive = heat[heat > 0]
    top = float(np.percentile(positive, percentile)) if positive.size else 0.0
    return np.clip(heat / top, 0, 1) if top > 0 else heat


def overlay_grid(path: Path, cells: Sequence[Sequence[dict]], col_titles: Sequence[str],
                 row_titles: Sequence[str], title: str, alpha: float = 0.55, size: float = 1.9,
                 stretch: bool = True) -> Path:
    """A grid of images; each cell is {"image": 2D, "map": 2D or None, "contour": 2D bool or None}.

    The map is shown (inferno) over the grey image, scaled to its 99.5th
    percentile when ``stretch`` (see ``for_display``); the contour (ground
    truth) is drawn in cyan.
    """
    plt = _plt()
    rows, cols = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.5), squeeze=False)
    for r, row in enumerate(cells):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(row) or row[c] is None:
                ax.axis("off")
                continue
            cell = row[c]
            ax.imshow(cell["image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")  # windowed inputs
            if cell.get("map") is not None:
                heat = for_display(cell["map"]) if stretch else np.clip(np.asarray(cell["map"], float), 0, 1)
                ax.imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")
            if cell.get("contour") is not None and np.any(cell["contour"]):
                ax.contour(np.asarray(cell["contour"], float), levels=[0.5], colors="cyan", linewidths=0.7)
            if r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
            if c == 0 and r < len(row_titles):
                ax.set_ylabel(row_titles[r], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def bar_chart(path: Path, labels: Sequence[str], series: dict, ylabel: str, title: str,
              reference: float | None = None, reference_label: str | None = None,
              ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bars: series name -> (means, standard deviations) aligned with ``labels``."""
    plt = _plt()
    n = len(series)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels) * max(n, 1) + 2), 3.6))
    positions = np.arange(len(labels))
    for i, (name, (means, sds)) in enumerate(series.items()):
        ax.bar(positions + (i - (n - 1) / 2) * width, means, width, yerr=sds, capsize=2, label=name)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=0.8, label=reference_label)
    ax.set_xticks(positions)
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curves(path: Path, x: Sequence[float], series: dict, xlabel: str, ylabel: str, title: str,
           markers: dict | None = None, ylim: tuple[float, float] | None = None,
           xticklabels: Sequence[str] | None = None) -> Path:
    """Lines: series name -> y values (or (mean, sd) for a shaded band); markers name -> (x, y)."""
    plt = _plt()
    many = len(series) > 6
    fig, ax = plt.subplots(figsize=(8.4 if many else 6.4, 3.8))
    colours = plt.get_cmap("tab20").colors
    styles = ["-", "--", ":", "-."]
    for i, (name, values) in enumerate(series.items()):
        style = {"color": colours[i % len(colours)], "linestyle": styles[(i // len(colours)) % len(styles)]}
        if isinstance(values, tuple):
            m, s = (np.asarray(v, float) for v in values)
            ax.plot(x, m, label=name, **style)
            ax.fill_between(x, m - s, m + s, color=style["color"], alpha=0.15)
        else:
            ax.plot(x, values, label=name, marker="." if many else None, **style)
    for name, (mx, my) in (markers or {}).items():
        ax.plot([mx], [my], marker="o", linestyle="none", label=name)
    if xticklabels is not None:
        ax.set_xticks(list(x))
        ax.set_xticklabels(xticklabels, rotation=60, ha="right", fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    if many:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def map_panels(path: Path, panels: Sequence[dict], title: str, size: float = 2.6) -> Path:
    """One row of maps on their own (no image): {"map": 2D, "title": str}, with a colour bar."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels) + 0.6, size + 0.5), squeeze=False)
    image = None
    for ax, panel in zip(axes[0], panels):
        image = ax.imshow(panel["map"], cmap="inferno", vmin=0, vmax=1)
        if panel.get("contour") is not None:
            ax.contour(np.asarray(panel["contour"], float), levels=[0.5], colors="cyan", linewidths=0.7)
        ax.set_title(panel["title"], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), fraction=0.02)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def scatter(path: Path, points: dict, xlabel: str, ylabel: str, title: str) -> Path:
    """Points with a legend: name -> (x, y); names sharing a prefix before " @ " share a marker."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    colours = plt.get_cmap("tab10").colors
    families = list(dict.fromkeys(name.split(" @ ")[0] for name in points))
    places = list(dict.fromkeys(name.split(" @ ")[-1] for name in points))
    markers = "osD^v*Px"
    for name, (px, py) in points.items():
        family, place = name.split(" @ ")[0], name.split(" @ ")[-1]
        ax.plot([px], [py], linestyle="none", label=name, markersize=8,
                marker=markers[families.index(family) % len(markers)],
                color=colours[places.index(place) % len(colours)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def panel_bars(path: Path, labels: Sequence[str], panels: Sequence[dict], title: str) -> Path:
    """Horizontal bars, one panel per metric: {"name", "means", "sds", "xlim", "reference"?}."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2.2, 0.28 * len(labels) + 1.2),
                             sharey=True, squeeze=False)
    positions = np.arange(len(labels))[::-1]
    for ax, panel in zip(axes[0], panels):
        ax.barh(positions, panel["means"], xerr=panel["sds"], capsize=2, color=panel.get("color", "tab:blue"))
        if panel.get("reference") is not None:
            ax.axvline(panel["reference"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlim(*panel["xlim"])
        ax.set_title(panel["name"], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_yticks(positions)
    axes[0][0].set_yticklabels(labels, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
