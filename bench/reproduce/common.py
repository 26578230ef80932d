"""Shared pieces of the reproduction report: run context, section record, statistics.

Every section module (``bench/reproduce/<paper>.py``) exposes ``KEY``, ``TITLE`` and
``run(ctx) -> Section``.  A section fills in the paper's claim, the protocol,
tables, figures and one verdict per claim; ``report`` writes them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
DEFAULT_OUT = BENCH / "results" / "reproduce"
DEFAULT_SEED = 4242

#: Seeds the bundled models were trained / validated with (models/train.py and
#: models/validate.py); the report must never evaluate on them.
USED_SEEDS = {1000, 1100, 1200, 2000, 2100, 2200, 31337}


class Skip(Exception):
    """A section (or part of one) cannot run here; the message says why."""


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Figure:
    file: str
    caption: str


@dataclass
class Verdict:
    claim: str
    holds: bool | None  # None: not testable here (skipped)
    evidence: str


@dataclass
class Section:
    key: str
    title: str
    paper: str
    claim: str
    protocol: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    measured: str = ""  # one line of key numbers for the summary table
    skipped: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.skipped:
            return "skipped"
        return "ok"


@dataclass
class Context:
    """What every section gets: mode, output folder, seed, shared data and models."""

    quick: bool
    out: Path
    seed: int
    data_dir: Path | None
    log: Callable[[str], None] = print
    models_used: dict = field(default_factory=dict)  # name -> start of the weights' SHA-256
    _memo: dict = field(default_factory=dict)

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def seed_for(self, offset: int) -> int:
        seed = self.seed + offset
        if seed in USED_SEEDS:
            raise ValueError(f"seed {seed} was used to train or validate the bundled models; pick another --seed")
        return seed

    def memo(self, key, compute: Callable[[], Any]):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def model(self, name: str):
        """A bundled model (loaded once), or Skip with the reason when it is not bundled."""
        def load():
            from XAIExplainLib.models import list_models, load_model
            available = [m.name for m in list_models()]
            if name not in available:
                return Skip(f"model '{name}' is not bundled in this checkout (bundled: "
                            f"{', '.join(available) or 'none'})")
            model = load_model(name)
            self.models_used[name] = (model.card.weights.sha256 or "no checksum in card")[:16]
            return model
        loaded = self.memo(("model", name), load)
        if isinstance(loaded, Skip):
            raise loaded
        return loaded

    def figure_path(self, name: str) -> Path:
        return self.out / name


# ---- statistics ------------------------------------------------------------------------------

def finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def mean(values) -> float:
    a = finite(values)
    return float(a.mean()) if a.size else float("nan")


def median(values) -> float:
    a = finite(values)
    return float(np.median(a)) if a.size else float("nan")


def std(values) -> float:
    a = finite(values)
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


def paired_test(a, b) -> dict:
    """Paired comparison of a and b (same samples): mean difference, win rate, Wilcoxon p."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {"n": int(a.size), "mean_diff": float(np.mean(a - b)) if a.size else float("nan"),
           "win_rate": float(np.mean(a > b)) if a.size else float("nan"), "p": float("nan")}
    if a.size >= 5 and np.any(a != b):
        from scipy.stats import wilcoxon
        out["p"] = float(wilcoxon(a, b).pvalue)
    return out


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (numpy only: scipy.stats is slow to import)."""
    values = np.asarray(values, float).ravel()
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = np.empty(len(values), float)
    ranks[order] = (ends - (counts - 1) / 2.0)[inverse]
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` as a detector of ``labels`` (ties averaged)."""
    scores, labels = np.asarray(scores, float).ravel(), np.asarray(labels, bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "n/a"
        return f"{float(value):.{digits}f}"
    return str(value)


def mean_sd(values, digits: int = 3) -> str:
    a = finite(values)
    if not a.size:
        return "n/a"
    return f"{a.mean():.{digits}f} ± {std(a):.{digits}f}"


def p_text(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def verdict_word(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "not tested"}[holds]


def batched(fn: Callable, x, batch: int, *args, **kwargs):
    """Concatenate ``fn(x[i:i+batch], ...)`` along dim 0 (torch tensors)."""
    import torch
    return torch.cat([fn(x[i:i + batch], *args, **kwargs) for i in range(0, len(x), batch)])


def names(items: Sequence[str]) -> str:
    return ", ".join(items)


# ---- maps ------------------------------------------------------------------------------------

#: Methods whose raw map is signed; the report takes their positive part (the class evidence)
#: instead of the engine's display normalisation (magnitude), see ``compute_maps``.
POSITIVE_PART = {"cam"}


def compute_maps(module, x, method: str, layer=None, target=None, batch: int = 16, **options) -> np.ndarray:
    """Min-max normalised maps (N, *S) as float32 numpy, computed in batches with ``xai.explain``.

    ``target`` is None, an int, a per-sample sequence (sliced per batch) or a
    segmentation target.  CAM is signed: the engine normalises its magnitude for
    display, which also lights up negative evidence; here CAM is ReLU(raw) then
    min-max, the usual CAM display (Zhou et al.).
    """
    import torch
    import XAIExplainLib as xai

    x = torch.as_tensor(x)
    out = []
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        tb = target
        if isinstance(target, (list, tuple, np.ndarray)):
            tb = [int(t) for t in target[start:start + batch]]
        if method in POSITIVE_PART:
            raw = xai.explain(module, xb, method, target=tb, layer=layer, normalize=False, **options)
            maps = _minmax(torch.relu(raw))
        else:
            maps = xai.explain(module, xb, method, target=tb, layer=layer, **options)
        out.append(maps.detach().float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _minmax(maps):
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    import torch
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-30), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def predict(module, x, batch: int = 32) -> np.ndarray:
    """Logits of a numpy batch in eval mode."""
    import torch
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            out.append(module(torch.as_tensor(x[start:start + batch])).float().numpy())
    return np.concatenate(out)
