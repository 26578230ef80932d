"""How the page shows numbers the logic produced: metric values, a map's colour range, per-slice
probabilities (as rows and as a small SVG plot, the Slicer panel's plot chart node)."""
from __future__ import annotations


def number_text(value) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def range_text(node) -> str:
    """The colour bar's labels: the window of the map's colours (as the logic set it)."""
    if node is None or node.GetDisplayNode() is None:
        return ""
    display = node.GetDisplayNode()
    low, high = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    return f"{low:.3g} .. {high:.3g}"


def probability_rows(probabilities, class_names) -> list:
    import numpy as np

    values = np.atleast_2d(np.asarray(probabilities, dtype=float))
    names = list(class_names) or [f"class {i}" for i in range(values.shape[1])]
    return [{"slice": i, **{name: round(float(v), 4) for name, v in zip(names, row)}} for i, row in enumerate(values)]


def probability_svg(probabilities, class_names, width: int = 330, height: int = 110) -> str:
    """The per-slice class probabilities as a small SVG line plot (the panel's plot chart node)."""
    import html

    import numpy as np

    values = np.atleast_2d(np.asarray(probabilities, dtype=float))
    count = values.shape[0]
    colours = ("#f9a825", "#4fc3f7", "#81c784", "#e57373", "#ba68c8", "#ffffff")
    lines = []
    for k in range(values.shape[1]):
        xs = np.linspace(4, width - 4, count) if count > 1 else np.array([width / 2])
        ys = 4 + (1.0 - values[:, k]) * (height - 24)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        name = html.escape(str(class_names[k]) if k < len(class_names) else f"class {k}")
        colour = colours[k % len(colours)]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
                     f'<text x="{6 + 90 * k}" y="{height - 4}" fill="{colour}" font-size="11">{name}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="probability-plot">'
            f'<rect width="{width}" height="{height - 18}" fill="none" stroke="#777"/>' + "".join(lines) + "</svg>")
