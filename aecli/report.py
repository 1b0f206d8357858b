"""`aecli report PATH... [out=FILE.html]`: one self-contained HTML page for a run, a sweep or any set of runs.

The page needs nothing but itself: images are inlined as base64 data URIs, the style and the few lines of script
(click a column header to sort the table) are inline, and nothing is fetched (no CDN, no web font), so it can be
mailed, attached to a ticket or opened on a machine without a network. It is rendered from the jinja2 template
aecli/templates/report.html.j2 (autoescape: every value is escaped) and fits a 1400 px screen. It holds:

    the table           one row per run (aecli/runtable.py's rows, as `aecli runs` prints them), best first by the
                        optimized metric and ranked within each data set: the overrides that vary between the
                        runs, the best epoch's numbers and the test metrics; what every run shares (overrides,
                        numbers) is said once below it, and the metrics eval skipped (no labels) are named
    metric vs setting   for every swept numeric setting (lambda, lr, latent_dim, ...): val_recon, the probe
                        accuracy and the other headline numbers against it, one line per value of the other
                        swept settings (one per model); log axes where the values span decades (aecli/plots.py)
    learning curves     val_recon per epoch of every run (metrics.csv), one panel per data set, one colour per run
    per run             the newest reconstruction and sample grids, the code scatter and every other PNG in plots/,
                        and the test numbers with the reference each is read against and the protocol they came
                        from (test images, importance samples, seconds: the bookkeeping the table leaves out)

A sweep writes `report.html` into its folder when it ends (`report=false` to skip; aecli/sweep.py).
"""

from __future__ import annotations

import base64
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from aecli.errors import AecliError
from aecli.metric_names import direction
from aecli.plots import epoch_axis, figure, legend, palette, png_bytes, run_colour, set_scale
from aecli.rundir import RunDir, RunRecord, curve, newest_image, number, read_run
from aecli.runtable import (BOOKKEEPING, NOT_FAILED, cell, columns, data_sets, labelled_runs, row_of, skipped_note,
                            sort_rows, varying_overrides)

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
# headline numbers plotted against a swept setting, when the runs have them
HEADLINE = ["val_recon", "test_recon_bce", "test_probe_acc", "test_knn_acc", "test_frechet"]
# each test number and the reference it is read against (eval.json; docs/eval.md)
REFERENCE = {"probe_acc": ("pixel_probe_acc", "the same probe on raw pixels"),
             "knn_acc": ("pixel_knn_acc", "the same kNN on raw pixels"),
             "finetune_acc": ("scratch_acc", "the same network trained from a random start"),
             "frechet": ("frechet_floor", "training images against test images"),
             "iw_bound": ("elbo", "the ELBO it tightens"),
             "denoised_psnr": ("noisy_psnr", "the corrupted input"),
             "label_acc": ("classifier_acc", "the classifier on real test images")}
REFERENCES = {ref for ref, _ in REFERENCE.values()} - {"elbo"}
PROTOCOL = ["model", "data", "code", "test_images", "iw_samples", "iw_images", "iw_seconds", "probe_train_images",
            "classifier", "checkpoint"]


# -- the command --------------------------------------------------------------------------------------
def report_command(paths: list[str], out: str | None = None) -> Path:
    """Write the report of every run in or under `paths` to `out` (default: report.html in their common folder)
    and return where it is."""
    folders = [Path(p) for p in paths]
    if not folders:
        raise AecliError("report: give run folders or sweep folders: aecli report outputs/multirun/DATE/TIME")
    runs = labelled_runs(folders, "report")
    common = Path(os.path.commonpath([p.resolve() for p in folders]))
    target = Path(out) if out else common / REPORT_FILE
    if target.is_dir():
        raise AecliError(f"report: out={target} is a folder: give a file name, e.g. out={target / REPORT_FILE}")
    records = [read_run(run) for run, _ in runs]  # each folder read once, for the table and the page
    rows = [row_of(record, label) for record, (_, label) in zip(records, runs)]
    return write_report(rows, records, target, common)


def write_report(rows: list[dict], records: list[RunRecord], target: Path, common: Path) -> Path:
    """The page of runs already read (a sweep's callback hands over the rows of its summary) written to `target`."""
    page = render(rows, records, f"{len(records)} run{'s' * (len(records) > 1)} in {common}")
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as e:
        raise AecliError(f"report: cannot write out={target} ({e.strerror or e}): choose another out=") from None
    return target


def render(rows: list[dict], records: list[RunRecord], title: str) -> str:
    """The page for `rows` (runtable.row_of's, in the order of `records`, the runs they were made of)."""
    import jinja2

    shown, common = varying_overrides(rows)
    settings = [parse(s) for s in shown]
    env = jinja2.Environment(loader=jinja2.PackageLoader("aecli", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    figures = [*setting_plots(rows, settings), *curves_plots(rows, records)]
    return env.get_template(TEMPLATE).render(
        title=title, made=datetime.now().strftime("%Y-%m-%d %H:%M"), **table(rows, shown, common),
        figures=[{"uri": uri, "caption": caption, "kind": ""} for caption, uri in figures],
        runs=[run_details(i, row, record, overrides)
              for i, (row, record, overrides) in enumerate(zip(rows, records, shown))])


# -- the table ----------------------------------------------------------------------------------------
def table_columns(rows: list[dict]) -> tuple[list[str], dict[str, Any]]:
    """The table's columns, and the test numbers every run holds the same value of (said once below it). Each
    run's bookkeeping (test images, seconds of the bound) and the references (the pixel floors) are in its
    details: the table fits the page."""
    cols = [c for c in columns(rows) if c not in ("error", "optimized_metric", *BOOKKEEPING)
            and c.removeprefix("test_") not in REFERENCES]
    if len(data_sets(rows)) < 2:
        cols = [c for c in cols if c != "data"]
    same = {c: rows[0].get(c) for c in cols if c.startswith("test_") and len(rows) > 1
            and all(r.get(c) == rows[0].get(c) for r in rows)}
    return [c for c in cols if c not in same], same


def table(rows: list[dict], shown: list[str], common: list[str]) -> dict:
    """The runs as a table sortable by any column (best first by each run's optimized metric, within each data
    set), and the notes below it."""
    order = {id(r): i for i, r in enumerate(rows)}
    cols, same = table_columns(rows)
    metrics = {r.get("optimized_metric") for r in rows} - {None}
    body = []
    for row in sort_rows(rows):
        i = order[id(row)]
        cells = []
        for c in cols:
            v = row.get(c)
            if c == "run":
                cells.append({"text": row["run"], "link": f"run-{i}", "value": None, "css": ""})
            elif c == "overrides":
                cells.append({"text": shown[i], "link": None, "value": None, "css": "overrides"})
            else:
                cells.append({"text": cell(c, v), "link": None, "value": v if number(v) is not None else None,
                              "css": ""})
        body.append({"state": "ok" if row["status"] in NOT_FAILED else "bad", "cells": cells})
    notes = [f"every run: {' '.join(common)}"] if common else []
    if same:
        notes.append("the same in every run: " + ", ".join(f"{c.removeprefix('test_')} {cell(c, v)}"
                                                          for c, v in same.items()))
    if len(data_sets(rows)) > 1:
        notes.append("runs are ranked within each data set: their numbers are not comparable across data sets")
    skipped = skipped_note(rows)
    if skipped:
        notes.append(skipped)
    return {"headers": [header(c, metrics) for c in cols], "table": body, "notes": notes}


def header(column: str, metrics: set) -> str:
    if column == "optimized" and len(metrics) == 1:
        metric = next(iter(metrics))
        return f"optimized ({metric}, {'higher' if direction(metric) == 'maximize' else 'lower'} is better)"
    return column.removeprefix("test_")  # the test metrics, as the console table names them


# -- plots --------------------------------------------------------------------------------------------
def parse(overrides: str) -> dict[str, str]:
    """`model=ae lambda=0.1` -> {"model": "ae", "lambda": "0.1"}."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides.split() if "=" in o)


def setting_plots(rows: list[dict], settings: list[dict[str, str]]) -> list[tuple[str, str]]:
    """For each swept setting whose values are numbers: each headline metric against it, one line per value of
    the other swept settings (e.g. val_recon and test_probe_acc against lambda, one line per model), each line in
    the same colour in every panel."""
    keys = sorted({k for s in settings for k in s})
    swept = [k for k in keys if len({s.get(k) for s in settings}) > 1
             and all(number(s[k]) is not None for s in settings if k in s)]
    metrics = [m for m in dict.fromkeys([*{r.get("optimized_metric") for r in rows} - {None}, *HEADLINE])
               if sum(number(r.get(m)) is not None for r in rows) > 1]
    figures = []
    for key in swept:
        if not metrics:
            break
        labels = sorted({" ".join(f"{k}={v}" for k, v in s.items() if k != key) or "runs" for s in settings})
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
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label,
                        color=run_colour(labels.index(label)))
            set_scale(ax, "x", [p[0] for pts in lines.values() for p in pts])
            set_scale(ax, "y", [p[1] for pts in lines.values() for p in pts])
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
            ax.set_title(f"{metric} ({'higher' if direction(metric) == 'maximize' else 'lower'} is better)")
        legend(axes[0])
        figures.append((f"{', '.join(metrics)} against {key}", data_uri(png_bytes(fig))))
    return figures


def curves_plots(rows: list[dict], records: list[RunRecord]) -> list[tuple[str, str]]:
    """val_recon per epoch of every run (the runs' metrics.csv): one panel per data set (a val_recon of one data
    set is not on the scale of another's), one colour per run, whole epochs on the x axis."""
    curves = [(i, row, curve(record.path, "val_recon", record.metrics))
              for i, (row, record) in enumerate(zip(rows, records))]
    curves = [c for c in curves if c[2]]
    if not curves:
        return []
    groups = list(dict.fromkeys(row.get("data") or "" for _, row, _ in curves))
    fig, axes = figure(len(groups), width=7.0, per_row=2)
    for ax, group in zip(axes, groups):
        members = [(i, row, points) for i, row, points in curves if (row.get("data") or "") == group]
        for i, row, points in members:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None,
                    label=row["run"], color=run_colour(i))
        epoch_axis(ax)
        ax.set_ylabel("val_recon (nats per image)")
        if group:
            ax.set_title(f"data={group}")
        set_scale(ax, "y", [p[1] for _, _, points in members for p in points])
        legend(ax)
    return [("learning curves: val_recon per epoch" + (", one panel per data set" if len(groups) > 1 else ""),
             data_uri(png_bytes(fig)))]


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- one run ------------------------------------------------------------------------------------------
def run_details(i: int, row: dict, record: RunRecord, overrides: str) -> dict:
    """A run's pictures (newest grids, then the plots), its problems (error, collapse warnings) and its test
    numbers with their references, the metrics it skipped and the protocol."""
    run_dir = record.path
    run = RunDir(run_dir)
    grids = [(p, f"{kind}, epoch {int(p.stem.rsplit('_', 1)[1])}") for kind, p in
             (("reconstructions (inputs above)", newest_image(run_dir, "recon_epoch_*.png")),
              ("samples", newest_image(run_dir, "samples_epoch_*.png"))) if p is not None]
    plots = sorted(run.plots.glob("*.png"), key=lambda p: (p.stem != "codes", p.name))  # the code scatter first
    pictures = [*({"uri": data_uri(p.read_bytes()), "caption": t, "kind": "grid"} for p, t in grids),
                *({"uri": data_uri(palette(p.read_bytes())), "caption": p.name, "kind": ""} for p in plots)]
    problems = ([row["error"]] if row.get("error") else []) + (record.status.get("warnings") or [])
    result = record.evaluation
    details = {"anchor": f"run-{i}", "label": row["run"], "status": row.get("status"), "overrides": overrides,
               "state": "ok" if row.get("status") in NOT_FAILED else "bad", "path": str(run_dir),
               "problems": problems, "pictures": pictures, "eval": [], "skipped": [], "protocol": ""}
    if result:
        details.update(eval=eval_rows(result), protocol="; ".join(f"{k}: {fmt(result[k])}" for k in PROTOCOL
                                                                   if k in result),
                       skipped=[f"{k} ({why})" for k, why in (result.get("skipped") or {}).items()])
    return details


def eval_rows(result: dict) -> list[dict]:
    """eval.json's numbers, each with the reference it is read against."""
    rows = []
    for k, v in result.items():
        if k in PROTOCOL or k in REFERENCES or number(v) is None:
            continue
        ref, why = REFERENCE.get(k, (None, ""))
        against = f"{ref} {fmt(result[ref])} ({why})" if ref in result else ""
        rows.append({"name": k, "value": fmt(v), "against": against})
    return rows


def fmt(v: Any) -> str:
    """A number of eval.json: whole numbers whole (10000, not 1e+04), others to 4 significant digits."""
    return cell("", v)
