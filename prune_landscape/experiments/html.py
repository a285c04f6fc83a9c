"""The sweep report: ``sweep.html``, ``sweep.md`` and ``sweep.json`` (+ ``plots/``) from a list of rows.

A *row* is the plain dict :func:`prune_landscape.experiments.row.row_of` builds (one method x sparsity x
final-layer policy x seed: an audit report plus its training result). This module only reads rows; it never
prunes or trains, and it imports no lightning, hydra or wandb. Every number on the page and in the Markdown
is formatted from the row it came from, so the three files always agree (``sweep.json`` holds the
unrounded values). The file names say "sweep": ``report.json`` always means one audit
(:meth:`prune_landscape.report.AuditReport.to_dict`, written by :func:`prune_landscape.report.save_report`).

Example:
    >>> rows = [{"key": "dense|0|dense|0", "method": "dense", "sparsity": 0.0, "final_layer_policy": "dense",
    ...          "seed": 0, "density": 1.0, "final_layer": "fc2.weight", "final_layer_density": 1.0,
    ...          "final_layer_dense": True, "fan_in_min": 32, "n": 100, "dead_units": 0,
    ...          "collapsed_layers": [], "landscape": "RISKY", "existence": "UNKNOWN",
    ...          "train_accuracy": 0.9, "test_accuracy": 0.8, "layer_densities": {"fc1.weight": 1.0}}]
    >>> headline(rows)[0]
    'Final layer left sparse: no method.'

The words (headline, worst-first ranking, remedies) come from :mod:`prune_landscape.experiments.headline`; this
module lays them out with the summary table, the "Mask verdicts, worst first" table and the plots
(:mod:`prune_landscape.experiments.plots`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from prune_landscape.experiments.headline import (
    _RANKED,
    LEVELS,
    Row,
    _code,
    _level,
    _pct,
    _policy_rank,
    _price,
    _remedy_lines,
    headline,
    ranked,
)
from prune_landscape.experiments.plots import PLOTS, plot_accuracy, plot_final_layer, plot_layer_profiles, png

__all__ = ["COLUMNS", "LEVELS", "Column", "headline", "ranked", "plot_accuracy", "plot_final_layer", "plot_layer_profiles",
           "render_report", "to_html", "to_markdown", "write_atomic"]

_GOOD, _WARN, _BAD, _NEUTRAL = "good", "warn", "bad", "neutral"
_LEVEL_CLASS = {"SAFE": _GOOD, "CAUTION": _NEUTRAL, "RISKY": _WARN, "BROKEN": _BAD}


def _final_layer_state(row: Row) -> str:
    if row.get("connected") is False:
        return "NO PATH"  # no input reaches the outputs: dense or sparse no longer means anything
    return "DENSE" if row["final_layer_dense"] else "SPARSE"


def _final_layer_cell(row: Row) -> str:
    return f"{_pct(row['final_layer_density'])} {_final_layer_state(row)}"


def _final_layer_class(row: Row) -> str:
    return {"NO PATH": _BAD, "DENSE": _GOOD}.get(_final_layer_state(row), _WARN)


def _landscape_class(verdict: str) -> str:
    if verdict.startswith("NO_"):
        return _GOOD
    return _WARN if verdict == "RISKY" else _NEUTRAL  # RISKY is a class-level warning, not a proof


def _existence_class(verdict: str) -> str:
    if verdict.startswith("OPTIMUM_EXISTS"):
        return _GOOD
    return _BAD if verdict == "OPTIMUM_MAY_NOT_EXIST" else _NEUTRAL


@dataclass(frozen=True)
class Column:
    """One summary-table column: its header, how a row's cell reads, and its colour class."""

    header: str
    text: Callable[[Row], str]
    css: Callable[[Row], str] = lambda row: ""
    hint: str = ""


#: The summary table, in order; the HTML page and the Markdown file both render exactly these cells.
COLUMNS: tuple[Column, ...] = (
    Column("method", lambda r: str(r["method"])),
    Column("sparsity", lambda r: _pct(r["sparsity"])),
    Column("final-layer policy", lambda r: str(r["final_layer_policy"])),
    Column("seed", lambda r: str(r["seed"])),
    Column("mask verdict", _level, lambda r: _LEVEL_CLASS.get(_level(r), ""),
           "what the mask alone did, against the same network with every weight kept: BROKEN > RISKY > CAUTION > SAFE"),
    Column("head price", _price, hint="masked-head optimum minus dense-head optimum on the trained features "
                                      "(ridge objective), and its share of the no-feature loss"),
    Column("kept weights", lambda r: _pct(r["density"], 2), hint="global density achieved"),
    Column("final layer", _final_layer_cell, _final_layer_class,
           "density of the classifier weight; DENSE = every output sees every effective last-hidden unit"),
    Column("min fan-in / n", lambda r: f"{r['fan_in_min']} / {r['n']}",
           lambda r: _GOOD if r["fan_in_min"] >= r["n"] else _NEUTRAL,
           "smallest per-output fan-in of the final layer against the number of training samples"),
    Column("dead units", lambda r: str(r["dead_units"]), lambda r: _WARN if r["dead_units"] else ""),
    Column("collapsed layers", lambda r: ", ".join(n.removesuffix(".weight") for n in r["collapsed_layers"]) or "none",
           lambda r: _BAD if r["collapsed_layers"] else _GOOD),
    Column("landscape", lambda r: str(r["landscape"]), lambda r: _landscape_class(str(r["landscape"]))),
    Column("existence", lambda r: str(r["existence"]), lambda r: _existence_class(str(r["existence"]))),
    Column("train acc", lambda r: _pct(r.get("train_accuracy"))),
    Column("test acc", lambda r: _pct(r.get("test_accuracy"))),
)


def _ordered(rows: Sequence[Row]) -> list[Row]:
    # The dense reference first, then by method name, sparsity, policy and seed: tables read as a grid.
    return sorted(rows, key=lambda r: (r["method"] != "dense", str(r["method"]), float(r["sparsity"]),
                                       _policy_rank(str(r["final_layer_policy"])), int(r["seed"])))


def _save_plots(rows: Sequence[Row], directory: Path) -> dict[str, Path]:
    (directory / "plots").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, draw in PLOTS.items():
        paths[name] = directory / "plots" / f"{name}.png"
        write_atomic(paths[name], png(draw(rows)))
    return paths


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write through a temporary file and rename, so a reader (or a Ctrl-C) never sees half a file."""
    data = content.encode() if isinstance(content, str) else content
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(handle, 0o644)  # mkstemp makes 0600 files; a report is meant to be read by others
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _probe_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    keys = sorted({f"{probe}/{key}" for r in rows for probe, values in (r.get("probes") or {}).items() for key in values})
    body = []
    for r in rows:
        cells = []
        for key in keys:
            probe, name = key.split("/", 1)
            value = (r.get("probes") or {}).get(probe, {}).get(name)
            cells.append("—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}")
        body.append(cells)
    return keys, body


def _md(text: Any) -> str:
    """Text for Markdown: raw HTML in names (a method called ``<img ...>``) is shown, never rendered.

    Only ``<`` can open a tag, so ``>=`` in verdict text stays readable in the raw file.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;")


def to_markdown(rows: Sequence[Row], *, title: str, meta: Mapping[str, Any] | None = None, interrupted: bool = False) -> str:
    """The report as Markdown: headline, summary table, probe scalars and links to the plots."""
    rows = _ordered(rows)
    lines = [f"# {_md(title)}", ""]
    if interrupted:
        lines += ["**Interrupted: the rows below are the ones that finished.**", ""]
    lines += [f"- {_md(line)}" for line in headline(rows)] + [""]
    for key, value in (meta or {}).items():
        lines.append(f"- {_md(key)}: {_md(value)}")
    lines += ["", "| " + " | ".join(c.header for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md(c.text(r)).replace("|", "/") for c in COLUMNS) + " |" for r in rows]
    if any(_code(r) >= 0 for r in rows):
        lines += ["", "## Mask verdicts, worst first", "", "| " + " | ".join(h for h, _ in _RANKED) + " |",
                  "|" + "---|" * len(_RANKED)]
        lines += ["| " + " | ".join(_md(text(r)).replace("|", "/") for _, text in _RANKED) + " |" for r in ranked(rows)]
    keys, body = _probe_table(rows)
    if keys:
        lines += ["", "## Probes", "", "| method | sparsity | final-layer policy | seed | " + " | ".join(keys) + " |",
                  "|" + "---|" * (4 + len(keys))]
        lines += [f"| {_md(r['method'])} | {_pct(r['sparsity'])} | {_md(r['final_layer_policy'])} | {r['seed']} | " + " | ".join(cells) + " |"
                  for r, cells in zip(rows, body)]
    remedies = _remedy_lines(rows)
    if remedies:
        lines += ["", "## Remedies (same budget, every pipeline)", "", *remedies]
    lines += ["", "## Plots", ""] + [f"![{name}](plots/{name}.png)" for name in PLOTS] + [""]
    return "\n".join(lines)


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#666;font-size:12px;margin-bottom:14px}.meta span{margin-right:14px}
.headline{background:#f5f7fb;border-left:4px solid #3a6ff7;padding:10px 16px;margin:12px 0;border-radius:4px}
.headline li{margin:3px 0}.interrupted{background:#fff3bf;border-left-color:#f59f00}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12px;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #e4e4e7;text-align:left;white-space:nowrap}
th{background:#fafafa;position:sticky;top:0;font-weight:600}tr:hover td{background:#f3f6ff}
td.good{background:#d3f9d8;color:#1b5e20}td.warn{background:#fff3bf;color:#7a4b00}td.bad{background:#ffd8d8;color:#8b0000;font-weight:600}
td.neutral{background:#f1f3f5;color:#555}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.dense td:first-child{font-style:italic}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-height:330px;border:1px solid #eee;border-radius:4px}
.bar{display:inline-block;height:8px;background:#4c6ef5;border-radius:2px;margin-right:6px;vertical-align:middle}
details{margin:6px 0}.figs{display:flex;flex-wrap:wrap;gap:8px}.figs figure{margin:0;font-size:11px;color:#555}.figs img{height:200px}
"""


def _image(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _cell(column: Column, row: Row) -> str:
    text = column.text(row)
    classes = " ".join(c for c in (column.css(row), "num" if column.header in ("kept weights", "train acc", "test acc", "dead units") else "") if c)
    inner = escape(text)
    if column.header == "test acc" and row.get("test_accuracy") is not None:
        inner = f'<span class="bar" style="width:{round(60 * row["test_accuracy"])}px"></span>{inner}'
    if column.header == "landscape" and row.get("landscape_rules"):
        return f'<td class="{classes}" title="rules: {escape(", ".join(row["landscape_rules"]))}">{inner}</td>'
    return f'<td class="{classes}">{inner}</td>'


def to_html(rows: Sequence[Row], *, title: str, plots: Mapping[str, Path], directory: Path,
            meta: Mapping[str, Any] | None = None, interrupted: bool = False) -> str:
    """The report as one self-contained HTML page (plots embedded; probe figures linked from ``directory``)."""
    rows = _ordered(rows)
    head = "".join(f'<th title="{escape(c.hint)}">{escape(c.header)}</th>' for c in COLUMNS)
    body = "".join(f'<tr class="{"dense" if r["method"] == "dense" else ""}">' + "".join(_cell(c, r) for c in COLUMNS) + "</tr>"
                   for r in rows)
    notice = '<li><b>Interrupted: the rows below are the ones that finished.</b></li>' if interrupted else ""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1><div class='meta'>"
        + "".join(f"<span><b>{escape(str(k))}</b> {escape(str(v))}</span>" for k, v in (meta or {}).items()) + "</div>",
        f"<ul class='headline{' interrupted' if interrupted else ''}'>{notice}"
        + "".join(f"<li>{escape(line)}</li>" for line in headline(rows)) + "</ul>",
        "<div class='plots'>" + "".join(f"<img alt='{n}' src='{_image(p)}'>" for n, p in plots.items()) + "</div>",
        f"<h2>Summary ({len(rows)} rows)</h2><div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>",
    ]
    if any(_code(r) >= 0 for r in rows):
        parts.append("<h2>Mask verdicts, worst first</h2><div class='scroll'><table><thead><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h, _ in _RANKED) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td class='{_LEVEL_CLASS.get(_level(r), '') if h == 'mask verdict' else ''}'>"
                                                f"{escape(text(r))}</td>" for h, text in _RANKED) + "</tr>"
                               for r in ranked(rows)) + "</tbody></table></div>")
    remedies = _remedy_lines(rows)
    if remedies:
        parts.append("<h2>Remedies (same budget, every pipeline)</h2><ul>"
                     + "".join(f"<li{' style=margin-left:24px' if line.startswith('  ') else ''}>"
                               f"{escape(line.strip().removeprefix('- '))}</li>" for line in remedies) + "</ul>")
    keys, cells = _probe_table(rows)
    if keys:
        parts.append("<h2>Probe scalars</h2><div class='scroll'><table><thead><tr><th>method</th><th>sparsity</th><th>final-layer policy</th><th>seed</th>"
                     + "".join(f"<th>{escape(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                     + "".join(f"<tr><td>{escape(str(r['method']))}</td><td>{_pct(r['sparsity'])}</td><td>{escape(str(r['final_layer_policy']))}</td>"
                               f"<td>{r['seed']}</td>" + "".join(f"<td class='num'>{c}</td>" for c in row_cells) + "</tr>"
                               for r, row_cells in zip(rows, cells)) + "</tbody></table></div>")
    figures = [(r, probe, path) for r in rows for probe, path in (r.get("figures") or {}).items() if (directory / path).is_file()]
    if figures:
        parts.append("<h2>Probe figures</h2>")
        for probe in sorted({p for _, p, _ in figures}):
            parts.append(f"<details><summary>{escape(probe)}</summary><div class='figs'>"
                         + "".join(f"<figure><img loading='lazy' src='{escape(path)}'><figcaption>{escape(r['method'])} "
                                   f"{_pct(r['sparsity'])} final layer {escape(str(r['final_layer_policy']))} seed {r['seed']}</figcaption></figure>"
                                   for r, p, path in figures if p == probe) + "</div></details>")
    parts.append("<p class='meta'>Every number here is in sweep.json, unrounded.</p></body></html>")
    return "".join(parts)


def render_report(rows: Sequence[Row], directory: str | os.PathLike, *, title: str = "Pruning-method audit",
                  meta: Mapping[str, Any] | None = None, interrupted: bool = False) -> dict[str, Path]:
    """Write the sweep report, ``sweep.json``, ``sweep.md``, ``sweep.html`` and ``plots/*.png``, into ``directory``.

    Returns:
        ``{"json": ..., "markdown": ..., "html": ..., "plot/<name>": ...}`` paths.

    Example:
        >>> import tempfile
        >>> sorted(render_report([], tempfile.mkdtemp()))[:3]
        ['html', 'json', 'markdown']
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = _ordered(rows)
    plots = _save_plots(rows, directory)
    document = {"title": title, "meta": dict(meta or {}), "interrupted": interrupted, "headline": headline(rows), "rows": list(rows)}
    paths = {"json": directory / "sweep.json", "markdown": directory / "sweep.md", "html": directory / "sweep.html"}
    write_atomic(paths["json"], json.dumps(document, indent=1, default=str))
    write_atomic(paths["markdown"], to_markdown(rows, title=title, meta=meta, interrupted=interrupted))
    write_atomic(paths["html"], to_html(rows, title=title, plots=plots, directory=directory, meta=meta, interrupted=interrupted))
    return {**paths, **{f"plot/{name}": path for name, path in plots.items()}}
