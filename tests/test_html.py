"""The sweep report renderer: the HTML and Markdown tables say exactly what sweep.json says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from prune_landscape.experiments.html import COLUMNS, headline, render_report

#: column header -> (JSON fields whose values the cell shows, scale, decimals shown)
NUMERIC = {
    "sparsity": (("sparsity",), 100, 1),
    "seed": (("seed",), 1, 0),
    "kept weights": (("density",), 100, 2),
    "final layer": (("final_layer_density",), 100, 1),
    "min fan-in / n": (("fan_in_min", "n"), 1, 0),
    "dead units": (("dead_units",), 1, 0),
    "train acc": (("train_accuracy",), 100, 1),
    "test acc": (("test_accuracy",), 100, 1),
}


BASELINE = {"landscape": "RISKY", "landscape_rules": ["NL-4"], "existence": "UNKNOWN", "existence_rules": ["RELU-4"],
            "last_hidden_width": 32, "text": "landscape RISKY by NL-4 [RECALLED], existence UNKNOWN by RELU-4 [READ]"}


def make_row(method, sparsity, policy, *, final_density, test, train=0.9, dead=0, collapsed=(), landscape="RISKY",
             existence="UNKNOWN", seed=0, fan_in=7, n=100, level="SAFE", rules=("DENSE-HEAD",), price=None,
             explanation="dense head"):
    return {
        "key": f"{method}|{sparsity:g}|{policy}|{seed}", "method": method, "sparsity": sparsity,
        "final_layer_policy": policy, "seed": seed, "density": round(1 - sparsity, 6) + 1.234e-4,
        "final_layer": "fc3.weight", "final_layer_density": final_density, "final_layer_dense": final_density == 1.0,
        "fan_in_min": fan_in, "n": n, "dead_units": dead, "collapsed_layers": list(collapsed),
        "landscape": landscape, "landscape_rules": ["NL-4"], "existence": existence,
        "train_accuracy": train, "test_accuracy": test,
        "layer_densities": {"fc1.weight": 0.05, "fc2.weight": 0.2, "fc3.weight": final_density},
        "probes": {"final_layer_gap": {"gap": 0.0123456}},
        "mask_verdict": level, "mask_verdict_code": ["SAFE", "CAUTION", "RISKY", "BROKEN"].index(level),
        "mask_verdict_rules": list(rules), "mask_verdict_explanation": explanation,
        "head_price": price, "head_price_relative": None if price is None else price / 2.3026,
        "head_price_loss": "cross_entropy", "last_hidden_width": 32, "connected": not collapsed,
        "baseline": BASELINE,
        "remedy": None if final_density == 1.0 else {"text": "keep `fc3` dense: +20 weights, 1.0 % of the kept budget",
                                                     "settings": {"torch": "prune.global_unstructured(...)"}},
    }


ROWS = [
    make_row("dense", 0.0, "dense", final_density=1.0, test=0.91234, fan_in=100),
    make_row("magnitude", 0.9, "prune", final_density=0.23456, test=0.80449, dead=3, level="RISKY", rules=("PRICE",),
             price=0.2, explanation="sparse head: 23.5 % kept; price +0.2 nats"),
    make_row("magnitude", 0.9, "dense", final_density=1.0, test=0.85551),
    make_row("synflow", 0.9, "prune", final_density=1.0, test=0.7, train=None),
    make_row("snip", 0.98, "prune", final_density=0.0543, test=0.10, collapsed=["fc1.weight"],
             existence="OPTIMUM_MAY_NOT_EXIST", level="BROKEN", rules=("NO-PATH", "COLLAPSED"),
             explanation="no input reaches any output; collapsed (no alive unit): fc1"),
    make_row("snip", 0.98, "dense", final_density=1.0, test=0.30, landscape="NO_SPURIOUS_VALLEY", level="CAUTION",
             rules=("NARROWED",), explanation="20 of 32 units entering the head are effective"),
]


class _Tables(HTMLParser):
    """Collects every table as a list of rows of (cell text, cell class)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._class = [], None, ""

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._class = "", dict(attrs).get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((self._cell.strip(), self._class))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _numbers(text):
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _check_cells(header, cells, json_rows):
    """Every numeric cell equals its JSON value to the precision shown."""
    assert header == [c.header for c in COLUMNS]
    by_key = {(r["method"], round(100 * r["sparsity"], 1), r["final_layer_policy"]): r for r in json_rows}
    assert len(cells) == len(json_rows)
    for cell_row in cells:
        values = dict(zip(header, cell_row))
        row = by_key[(values["method"], _numbers(values["sparsity"])[0], values["final-layer policy"])]
        for column, (fields, scale, decimals) in NUMERIC.items():
            shown = _numbers(values[column])
            expected = [row[f] for f in fields]
            if expected == [None]:
                assert values[column] == "—"
                continue
            assert len(shown) == len(expected), (column, values[column])
            for got, want in zip(shown, expected):
                assert abs(got - scale * want) <= 0.5 * 10**-decimals + 1e-9, (column, got, want)
        assert ("DENSE" in values["final layer"]) == row["final_layer_dense"]
        assert values["collapsed layers"] == (", ".join(n.removesuffix(".weight") for n in row["collapsed_layers"]) or "none")
        assert values["landscape"] == row["landscape"] and values["existence"] == row["existence"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    paths = render_report(ROWS, directory, title="Test audit", meta={"model": "mlp"})
    return directory, paths


def test_writes_every_file(report):
    directory, paths = report
    for name in ("sweep.json", "sweep.md", "sweep.html", "plots/layer_profiles.png", "plots/final_layer.png",
                 "plots/accuracy.png"):
        assert (directory / name).is_file() and (directory / name).stat().st_size > 100, name
    assert paths["html"] == directory / "sweep.html"
    document = json.loads((directory / "sweep.json").read_text())
    assert len(document["rows"]) == len(ROWS) and document["interrupted"] is False
    # unrounded in the JSON
    assert {r["test_accuracy"] for r in document["rows"]} == {r["test_accuracy"] for r in ROWS}


def test_html_numbers_equal_json(report):
    directory, _ = report
    document = json.loads((directory / "sweep.json").read_text())
    parser = _Tables()
    parser.feed((directory / "sweep.html").read_text())
    summary = parser.tables[0]
    header = [text for text, _ in summary[0]]
    _check_cells(header, [[text for text, _ in row] for row in summary[1:]], document["rows"])
    # the probe table shows the probe scalar to 4 significant digits
    probes = next(t for t in parser.tables if t[0][-1][0] == "final_layer_gap/gap")
    assert probes[0][-1][0] == "final_layer_gap/gap" and all(row[-1][0] == "0.01235" for row in probes[1:])


def test_markdown_numbers_equal_json(report):
    directory, _ = report
    document = json.loads((directory / "sweep.json").read_text())
    lines = (directory / "sweep.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method | sparsity | final-layer policy | seed | mask verdict"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    _check_cells(table[0], table[2:], document["rows"])


def test_verdict_cells_are_colour_coded(report):
    directory, _ = report
    parser = _Tables()
    parser.feed((directory / "sweep.html").read_text())
    header = [text for text, _ in parser.tables[0][0]]
    rows = [dict(zip(header, row)) for row in parser.tables[0][1:]]
    snip_pruned = next(r for r in rows if r["method"][0] == "snip" and r["final-layer policy"][0] == "prune")
    assert snip_pruned["collapsed layers"][1] == "bad"
    assert snip_pruned["existence"][1] == "bad"
    assert snip_pruned["landscape"][1] == "warn"  # RISKY is a class-level warning
    assert snip_pruned["final layer"][1] == "bad"  # no input-output path
    assert snip_pruned["mask verdict"] == ("BROKEN", "bad")
    magnitude_pruned = next(r for r in rows if r["method"][0] == "magnitude" and r["final-layer policy"][0] == "prune")
    assert magnitude_pruned["final layer"][1] == "warn" and magnitude_pruned["mask verdict"] == ("RISKY", "warn")
    assert magnitude_pruned["head price"][0] == "+0.200 nats (8.7 %)"
    snip_dense = next(r for r in rows if r["method"][0] == "snip" and r["final-layer policy"][0] == "dense")
    assert snip_dense["landscape"][1] == "good" and snip_dense["final layer"][1] == "good"
    magnitude = next(r for r in rows if r["method"][0] == "magnitude" and r["final-layer policy"][0] == "prune")
    assert magnitude["dead units"][1].startswith("warn")


def test_headline_prints_the_baseline_once_and_what_each_mask_did_per_sparsity():
    lines = headline(ROWS)
    assert lines[0] == ("Architecture baseline (the same network with every weight kept, n = 100): landscape RISKY by "
                        "NL-4 [RECALLED], existence UNKNOWN by RELU-4 [READ]. It holds for every row; the mask verdicts "
                        "say what each mask added.")
    assert sum("Architecture baseline" in line for line in lines) == 1
    assert lines[1] == ("At 90 % sparsity, final layer pruned: magnitude leaves a RISKY sparse head (magnitude: 23.5 % kept, "
                        "min fan-in 7 of 32, price +0.200 nats); synflow keeps the head dense: SAFE.")
    assert lines[2] == "At 90 % sparsity, final layer kept dense: magnitude keeps the head dense: SAFE."
    assert lines[3] == ("At 98 % sparsity, final layer pruned: snip breaks the network (snip: no input-output path, "
                        "fc1 collapsed).")
    assert lines[4] == ("At 98 % sparsity, final layer kept dense: snip keeps the head dense but CAUTION "
                        "(snip: 20 of 32 units entering the head are effective).")
    assert "Mask verdicts: BROKEN x1, RISKY x1, CAUTION x1, SAFE x3." in lines
    assert "Landscape verdicts (theorem axis): NO_SPURIOUS_VALLEY x1, RISKY x5 (5 of 6 the same as the architecture's baseline)." in lines


def test_ranked_table_puts_the_worst_first_and_remedies_name_every_pipeline(report):
    directory, _ = report
    text = (directory / "sweep.md").read_text()
    table = text.split("## Mask verdicts, worst first")[1].split("\n\n")[1].splitlines()
    levels = [line.split("|")[1].strip() for line in table[2:]]
    assert levels == ["BROKEN", "RISKY", "CAUTION", "SAFE", "SAFE", "SAFE"]
    assert "| RISKY | magnitude | 90.0 % | prune | 0 | +0.200 nats (8.7 %) |" in text
    assert "## Remedies (same budget, every pipeline)" in text and "  - torch: `prune.global_unstructured(...)`" in text
    html = (directory / "sweep.html").read_text()
    assert "Mask verdicts, worst first" in html and "<td class='bad'>BROKEN</td>" in html


def test_headline_names_sparse_and_collapsed_methods():
    lines = headline(ROWS)
    assert "Final layer left sparse (density kept): snip (5.4 % at 98 %); magnitude (23.5 % at 90 %)." in lines
    assert "Final layer kept dense without being told to: synflow." in lines
    assert "Collapsed (a layer with no alive unit): snip (98 %)." in lines
    assert "Best test accuracy at 90 % sparsity: magnitude (final layer dense), 85.6 %." in lines
    # magnitude 90 %: 85.551 - 80.449 = +5.102 points; snip 98 %: 30 - 10 = +20 points
    assert ("Keeping the final layer dense changes test accuracy by +5.1 pp at 90 %, +20.0 pp at 98 % "
            "(mean over methods and seeds).") in lines


def test_interrupted_report_says_so(tmp_path):
    render_report(ROWS[:2], tmp_path, title="t", interrupted=True)
    assert "Interrupted" in (tmp_path / "sweep.html").read_text()
    assert "Interrupted" in (tmp_path / "sweep.md").read_text()
    assert json.loads((tmp_path / "sweep.json").read_text())["interrupted"] is True


def test_empty_report_renders(tmp_path):
    render_report([], tmp_path, title="nothing yet")
    assert "No rows yet." in (tmp_path / "sweep.md").read_text()


def test_rows_from_before_the_mask_verdict_still_render(tmp_path):
    old = [{k: v for k, v in row.items() if not k.startswith(("mask_verdict", "head_price", "baseline", "remedy"))}
           for row in ROWS]
    render_report(old, tmp_path, title="old rows")
    lines = headline(old)
    assert not any(line.startswith(("Architecture baseline", "At ", "Mask verdicts")) for line in lines)
    assert "| — | — |" in (tmp_path / "sweep.md").read_text()


def test_renderer_is_core():
    code = ("import sys, prune_landscape.experiments.html, prune_landscape.experiments.sweep; "
            "bad = [m for m in ('hydra', 'omegaconf', 'lightning', 'pytorch_lightning', 'wandb') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
