"""`aecli report PATH... [out=FILE.html]`: one self-contained HTML page for a run, a sweep or any set of runs.

The page needs nothing but itself: images are inlined as base64 data URIs, the style and the few lines of script
(click a column header to sort the table) are inline, and nothing is fetched (no CDN, no web font), so it can be
mailed, attached to a ticket or opened on a machine without a network. It holds:

    the table           one row per run (aecli/sweep.py's rows, as `aecli runs` prints them): the overrides that
                        vary between the runs, the best epoch's numbers and the test numbers; what every run
                        shares (overrides, floors) is said once below it
    metric vs setting   for every swept numeric setting (lambda, lr, latent_dim, ...): val_recon, the probe
                        accuracy and the other headline numbers against it, one line per value of the other
                        swept settings (one per model); log axes where the values span decades
    learning curves     val_recon per epoch of every run (metrics.csv), overlaid
    per run             the newest reconstruction and sample grids side by side, the code scatter and every
                        other PNG in plots/, and the test numbers with the protocol and floors beside them
                        (probe_acc next to the raw pixels' pixel_probe_acc, frechet next to frechet_floor)

A sweep writes `report.html` into its folder when it ends (`report=false` to skip; aecli/sweep.py).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from aecli.errors import AecliError
from aecli.sweep import _float, cell, collect, columns, direction, find_runs, sort_rows, varying_overrides

REPORT_FILE = "report.html"
# headline numbers plotted against a swept setting, when the runs have them
HEADLINE = ["val_recon", "test_recon_bce", "test_probe_acc", "test_knn_acc", "test_frechet"]
# each test number and the reference it is read against (eval.json; docs/eval.md)
REFERENCE = {"probe_acc": ("pixel_probe_acc", "the same probe on raw pixels"),
             "knn_acc": ("pixel_knn_acc", "the same kNN on raw pixels"),
             "frechet": ("frechet_floor", "training images against test images"),
             "label_acc": ("classifier_acc", "the classifier on real test images")}
PROTOCOL = ["model", "data", "code", "test_images", "iw_samples", "checkpoint"]


# -- the command --------------------------------------------------------------------------------------
def report_command(paths: list[str], out: str | None = None) -> Path:
    """Write the report of every run in or under `paths` to `out` (default: report.html in their common folder)
    and return where it is."""
    folders = [Path(p) for p in paths]
    if not folders:
        raise AecliError("report: give run folders or sweep folders: aecli report outputs/multirun/DATE/TIME")
    for p in folders:
        if not p.is_dir():
            raise AecliError(f"report: {p} is not a folder: give run folders or sweep folders "
                             "(outputs/multirun/DATE/TIME)")
    run_dirs = [r.resolve() for p in folders for r in find_runs(p)]
    if not run_dirs:
        raise AecliError(f"report: no run folders (with metrics.csv or .hydra/) in {', '.join(paths)}")
    common = Path(os.path.commonpath([p.resolve() for p in folders]))
    target = Path(out) if out else common / REPORT_FILE
    if target.is_dir():
        raise AecliError(f"report: out={target} is a folder: give a file name, e.g. out={target / REPORT_FILE}")
    page = render(collect(folders), run_dirs, f"{len(run_dirs)} run{'s' * (len(run_dirs) > 1)} in {common}")
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as e:
        raise AecliError(f"report: cannot write out={target} ({e.strerror or e}): choose another out=") from None
    return target


def render(rows: list[dict], run_dirs: list[Path], title: str) -> str:
    """The page for `rows` (sweep.collect's, in the order of `run_dirs`, the folders they were read from)."""
    shown, common = varying_overrides(rows)
    settings = [parse(s) for s in shown]
    sections = [run_section(i, row, run_dir, overrides)
                for i, (row, run_dir, overrides) in enumerate(zip(rows, run_dirs, shown))]
    figures = [*setting_plots(rows, settings), curves_plot(rows, run_dirs, shown)]
    plots = "".join(picture(u, t) for t, u in figures if u)
    made = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>aecli report: {esc(title)}</title>'
            f'<style>{STYLE}</style></head><body>\n<h1>aecli report</h1><p class="note">{esc(title)}; written '
            f'{made} by <code>aecli report</code></p>\n{table_html(rows, shown, common)}\n'
            f'<h2>Metrics against the settings</h2><div class="plots">{plots or "<p>no curves to draw</p>"}</div>\n'
            f'<h2>Runs</h2>\n{"".join(sections)}\n<script>{SCRIPT}</script></body></html>\n')


# -- the table ----------------------------------------------------------------------------------------
def table_html(rows: list[dict], shown: list[str], common: list[str]) -> str:
    """The runs as a table sortable by any column (best first by each run's optimized metric); the columns every
    run holds the same value in, and the overrides every run shares, are said once in the caption."""
    order = {id(r): i for i, r in enumerate(rows)}
    cols = [c for c in columns(rows) if c not in ("error", "optimized_metric")]
    same = {c: rows[0].get(c) for c in cols if c.startswith("test_") and len(rows) > 1
            and all(r.get(c) == rows[0].get(c) for r in rows)}
    cols = [c for c in cols if c not in same]
    metrics = {r.get("optimized_metric") for r in rows} - {None}
    head = "".join(f'<th title="click to sort">{esc(header(c, metrics))}</th>' for c in cols)
    body = []
    for row in sort_rows(rows):
        i = order[id(row)]
        cells = []
        for c in cols:
            if c == "run":
                cells.append(f'<td><a href="#run-{i}">{esc(row["run"])}</a></td>')
            elif c == "overrides":
                cells.append(f"<td>{esc(shown[i])}</td>")
            else:
                v = row.get(c)
                sort_key = f' data-v="{v}"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
                cells.append(f"<td{sort_key}>{esc(cell(c, v))}</td>")
        body.append(f'<tr class="{"ok" if row["status"] == "ok" else "bad"}">{"".join(cells)}</tr>')
    notes = [f"every run: {' '.join(common)}"] if common else []
    if same:
        notes.append("the same in every run: " + ", ".join(f"{c.removeprefix('test_')} {cell(c, v)}"
                                                          for c, v in same.items()))
    caption = "".join(f"<p>{esc(n)}</p>" for n in notes)
    return (f'<div class="scroll"><table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f'</table></div><div class="note">{caption}</div>')


def header(column: str, metrics: set) -> str:
    if column == "optimized" and len(metrics) == 1:
        metric = next(iter(metrics))
        return f"optimized ({metric}, {'higher' if direction(metric) == 'maximize' else 'lower'} is better)"
    return column


# -- plots --------------------------------------------------------------------------------------------
def parse(overrides: str) -> dict[str, str]:
    """`model=ae lambda=0.1` -> {"model": "ae", "lambda": "0.1"}."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides.split() if "=" in o)


def number(v: Any) -> float | None:
    return _float(v) if not isinstance(v, bool) else None


def spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) / min(positive) >= 100


def set_scale(ax, axis: str, values: list[float]) -> None:
    """Log where the values span decades (symlog when one of them is 0), linear otherwise."""
    if not spans_decades(values) or any(v < 0 for v in values):
        return
    smallest = min(v for v in values if v > 0)
    scale = (ax.set_xscale if axis == "x" else ax.set_yscale)
    scale("log") if min(values) > 0 else scale("symlog", linthresh=smallest)


def setting_plots(rows: list[dict], settings: list[dict[str, str]]) -> list[tuple[str, str]]:
    """For each swept setting whose values are numbers: each headline metric against it, one line per value of
    the other swept settings (e.g. val_recon and test_probe_acc against lambda, one line per model)."""
    keys = sorted({k for s in settings for k in s})
    swept = [k for k in keys if len({s.get(k) for s in settings}) > 1
             and all(number(s[k]) is not None for s in settings if k in s)]
    metrics = [m for m in dict.fromkeys([*{r.get("optimized_metric") for r in rows} - {None}, *HEADLINE])
               if sum(number(r.get(m)) is not None for r in rows) > 1]
    figures = []
    for key in swept:
        if not metrics:
            break
        fig, axes = figure(len(metrics))
        for ax, metric in zip(axes, metrics):
            lines: dict[str, list[tuple[float, float]]] = {}
            for row, s in zip(rows, settings):
                x, y = number(s.get(key)), number(row.get(metric))
                if x is not None and y is not None:
                    label = " ".join(f"{k}={v}" for k, v in s.items() if k != key) or "runs"
                    lines.setdefault(label, []).append((x, y))
            for label, points in sorted(lines.items()):
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            xs = [p[0] for pts in lines.values() for p in pts]
            ys = [p[1] for pts in lines.values() for p in pts]
            set_scale(ax, "x", xs)
            set_scale(ax, "y", ys)
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
            ax.set_title(f"{metric} ({'higher' if direction(metric) == 'maximize' else 'lower'} is better)", fontsize=9)
        legend(axes[0])
        figures.append((f"{', '.join(metrics)} against {key}", png_uri(fig)))
    return figures


def curves_plot(rows: list[dict], run_dirs: list[Path], shown: list[str]) -> tuple[str, str | None]:
    """val_recon per epoch of every run, overlaid (the runs' metrics.csv)."""
    curves = [(f"{row['run']} {label}".strip(), curve(run_dir, "val_recon"))
              for row, run_dir, label in zip(rows, run_dirs, shown)]
    curves = [(label, points) for label, points in curves if points]
    if not curves:
        return "learning curves", None
    fig, (ax,) = figure(1, width=7.0)
    for label, points in curves:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_recon (nats per image)")
    set_scale(ax, "y", [p[1] for _, points in curves for p in points])
    legend(ax)
    return "learning curves: val_recon per epoch", png_uri(fig)


def curve(run_dir: Path, column: str) -> list[tuple[float, float]]:
    """(epoch, value) of a metrics.csv column, the rows where it is a finite number."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    points = [(_float(r.get("epoch")), _float(r.get(column))) for r in rows]
    return [(x, y) for x, y in points if x is not None and y is not None]


def figure(panels: int, width: float = 4.2, per_row: int = 3):
    """A figure of `panels` axes, at most `per_row` side by side (the rest below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(panels, per_row)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), squeeze=False)
    axes = list(axes.flat)
    for ax in axes[panels:]:
        ax.remove()
    for ax in axes[:panels]:
        ax.grid(True, alpha=0.3)
    return fig, axes[:panels]


def legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 1 or (labels and labels[0] != "runs"):
        ax.legend(handles[:12], labels[:12], fontsize=7, title=f"{len(labels) - 12} more not listed"
                  if len(labels) > 12 else None, title_fontsize=7)


def png_uri(fig) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return data_uri(palette(buffer.getvalue()))


def palette(png: bytes) -> bytes:
    """A plot (a colour PNG) as a 256-colour PNG, when that is smaller: a scatter of 10,000 test codes shrinks
    about threefold and looks the same. Grey-level image grids are inlined as written."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.mode not in ("RGB", "RGBA"):
        return png
    buffer = io.BytesIO()
    image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(png) else png


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- one run ------------------------------------------------------------------------------------------
def newest(run_dir: Path, pattern: str) -> Path | None:
    """The grid of the latest epoch (images/recon_epoch_NNN.png: NNN is zero-padded, so names sort by epoch)."""
    found = sorted((run_dir / "images").glob(pattern))
    return found[-1] if found else None


def run_section(i: int, row: dict, run_dir: Path, overrides: str) -> str:
    """A run's pictures (newest grids side by side, the plots) and its test numbers with their references."""
    grids = [(p, f"{kind}, epoch {int(p.stem.rsplit('_', 1)[1])}") for kind, p in
             (("reconstructions (inputs above)", newest(run_dir, "recon_epoch_*.png")),
              ("samples", newest(run_dir, "samples_epoch_*.png"))) if p is not None]
    plots = [(p, p.name) for p in sorted((run_dir / "plots").glob("*.png"))]
    plots.sort(key=lambda item: item[0].name != "codes.png")  # the code scatter first
    images = "".join([*(picture(data_uri(p.read_bytes()), t, "grid") for p, t in grids),
                      *(picture(data_uri(palette(p.read_bytes())), t) for p, t in plots)])
    status = row.get("status")
    problems = [row["error"]] if row.get("error") else []
    state = run_dir / "status.json"
    if state.is_file():
        problems += json.loads(state.read_text()).get("warnings") or []
    notes = "".join(f'<p class="warn">{esc(p)}</p>' for p in problems)
    return (f'<section id="run-{i}"><h3>{esc(row["run"])} <span class="{"ok" if status == "ok" else "bad"}">'
            f'{esc(status)}</span> <span class="note">{esc(overrides)}</span></h3>'
            f'<p class="note">{esc(str(run_dir))}</p>{notes}'
            f'<div class="images">{images or "<p>no pictures</p>"}</div>{eval_html(run_dir)}</section>\n')


def eval_html(run_dir: Path) -> str:
    """eval.json as a table: each number with the reference it is read against, and the protocol it came from."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return '<p class="note">no eval.json (eval.at_end=false, or run: aecli eval run=...)</p>'
    result = json.loads(path.read_text())
    references = {ref for ref, _ in REFERENCE.values()}
    rows = []
    for k, v in result.items():
        if k in PROTOCOL or k in references or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        ref, why = REFERENCE.get(k, (None, ""))
        against = f"{ref} {fmt(result[ref])} ({why})" if ref in result else ""
        rows.append(f"<tr><td>{esc(k)}</td><td>{esc(fmt(v))}</td><td>{esc(against)}</td></tr>")
    protocol = "; ".join(f"{k}: {result[k]}" for k in PROTOCOL if k in result)
    return (f'<table class="eval"><thead><tr><th>test metric</th><th>value</th><th>read against</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="note">protocol: {esc(protocol)} (docs/eval.md)</p>')


def picture(uri: str, caption: str, kind: str = "") -> str:
    return (f'<figure><img class="{kind}" alt="{esc(caption)}" src="{uri}"><figcaption>{esc(caption)}</figcaption>'
            f'</figure>')


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 0; } h2 { margin-top: 32px; border-bottom: 1px solid #ccc; }
.note { color: #666; font-size: 12px; } .warn { color: #a15c00; font-size: 12px; margin: 2px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
td:first-child, td:nth-child(2), th:first-child, th:nth-child(2) { text-align: left; }
table.runs th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.runs th[data-dir="asc"]::after { content: " \\25B2"; } table.runs th[data-dir="desc"]::after { content: " \\25BC"; }
tr.bad td { color: #b00020; } span.ok { color: #1b7f3b; } span.bad { color: #b00020; }
.plots, .images { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; } img { max-width: 100%; } figcaption { font-size: 12px; color: #555; text-align: center; }
.images img { max-height: 300px; } .images img.grid { image-rendering: pixelated; }
section { border-top: 1px solid #eee; padding-top: 8px; margin-top: 16px; }
table.eval { margin-top: 8px; } table.eval th { text-align: left; } table.eval td:nth-child(3) { text-align: left; color: #555; }
"""

# click a header: sort by that column, again to reverse; numbers by value (data-v), runs without one last
SCRIPT = """
document.querySelectorAll("table.runs th").forEach((th, i) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const dir = th.dataset.dir === "asc" ? "desc" : "asc";
  th.parentNode.querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir;
  const key = row => { const c = row.cells[i]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v)
                                                   : (c.textContent === "-" ? null : c.textContent); };
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true});
    return dir === "asc" ? order : -order;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""
