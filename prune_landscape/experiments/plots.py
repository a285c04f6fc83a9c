"""The sweep report's comparative plots: rows in, matplotlib figures (or PNG bytes) out; no file I/O.

The figures are built on :class:`matplotlib.figure.Figure` directly, never through pyplot: nothing here picks
a backend or needs a display, and a user's own pyplot state (an interactive backend in a notebook) is left
alone. :mod:`~prune_landscape.experiments.html` writes the PNGs next to the report pages.

Example:
    >>> sorted(PLOTS)
    ['accuracy', 'final_layer', 'layer_profiles']
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib import colormaps, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from prune_landscape.experiments.headline import Row, _methods

__all__ = ["PLOTS", "plot_accuracy", "plot_final_layer", "plot_layer_profiles", "png"]


def _colours(rows: Sequence[Row]) -> dict[str, Any]:
    cycle = colormaps["tab10"]
    return {method: cycle(i % 10) for i, method in enumerate(_methods(rows))}


def _mean_by(rows: Sequence[Row], field: str) -> dict[tuple[str, str, float], float]:
    groups: dict[tuple[str, str, float], list[float]] = {}
    for r in rows:
        if r.get(field) is not None:
            groups.setdefault((r["method"], r["final_layer_policy"], float(r["sparsity"])), []).append(float(r[field]))
    return {k: statistics.fmean(v) for k, v in groups.items()}


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)


def plot_final_layer(rows: Sequence[Row]) -> Figure:
    """Final-layer density against sparsity, one line per method (rows whose policy prunes it)."""
    fig = Figure(figsize=(4.6, 3.2), layout="constrained")
    ax = fig.subplots()
    means = _mean_by([r for r in rows if r["final_layer_policy"] == "prune"], "final_layer_density")
    for method, colour in _colours(rows).items():
        points = sorted((s, v) for (m, _, s), v in means.items() if m == method)
        if points:
            ax.plot([100 * s for s, _ in points], [100 * v for _, v in points], "o-", color=colour, label=method)
    ax.set(xlabel="sparsity (%)", ylabel="final-layer density (%)", title="Final layer under global pruning")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def plot_accuracy(rows: Sequence[Row]) -> Figure:
    """Test accuracy against sparsity: solid = final layer pruned, dashed = kept dense; grey = dense net."""
    fig = Figure(figsize=(4.6, 3.2), layout="constrained")
    ax = fig.subplots()
    means = _mean_by(rows, "test_accuracy")
    for method, colour in _colours(rows).items():
        for policy, style in (("prune", "o-"), ("dense", "s--")):
            points = sorted((s, v) for (m, p, s), v in means.items() if m == method and p == policy)
            if points:
                ax.plot([100 * s for s, _ in points], [100 * v for _, v in points], style, color=colour,
                        label=f"{method}" if policy == "prune" else None, alpha=1.0 if policy == "prune" else 0.7)
    dense = [v for (m, _, _), v in means.items() if m == "dense"]
    if dense:
        ax.axhline(100 * statistics.fmean(dense), color="grey", lw=1, ls=":", label="dense network")
    ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title="Accuracy (dashed: dense final layer)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def _profile_panel(ax: Axes, rows: Sequence[Row], colours: dict[str, Any], sparsity: float) -> None:
    """One sparsity's per-layer densities, one line per method (mean over seeds), on a log scale."""
    layers: list[str] = []
    for method, colour in colours.items():
        chosen = [r for r in rows if r["method"] == method and float(r["sparsity"]) == sparsity]
        if not chosen:
            continue
        layers = list(chosen[0]["layer_densities"])
        values = [statistics.fmean(float(r["layer_densities"][name]) for r in chosen) for name in layers]
        ax.plot(range(len(layers)), [max(100 * v, 1e-3) for v in values], "o-", color=colour, label=method, ms=3)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    short = [name.removesuffix(".weight") for name in layers]
    many = len(short) > 6
    ax.set_xticks(range(len(short)), short, rotation=60 if many else 0, fontsize=7, ha="right" if many else "center")
    ax.set_title(f"{100 * sparsity:g} % sparsity", fontsize=9)
    ax.grid(alpha=0.3, which="both")


def plot_layer_profiles(rows: Sequence[Row]) -> Figure:
    """Per-layer density, one panel per sparsity, one line per method (final layer pruned)."""
    pruned = [r for r in rows if r["final_layer_policy"] == "prune" and r["method"] != "dense" and r.get("layer_densities")]
    levels = sorted({float(r["sparsity"]) for r in pruned}) or [0.0]
    fig = Figure(figsize=(min(4.2 * len(levels), 13), 3.2), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False, sharey=True)
    colours = _colours(rows)
    for ax, sparsity in zip(axes[0], levels):
        _profile_panel(ax, pruned, colours, sparsity)
    axes[0][0].set_ylabel("layer density (%)")
    _legend(axes[0][0])
    return fig


#: The report's plots, in page order: name -> rows -> figure.
PLOTS: dict[str, Callable[[Sequence[Row]], Figure]] = {
    "layer_profiles": plot_layer_profiles, "final_layer": plot_final_layer, "accuracy": plot_accuracy,
}


def png(figure: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (an Agg canvas; no pyplot, no display).

    Example:
        >>> png(plot_accuracy([]))[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
