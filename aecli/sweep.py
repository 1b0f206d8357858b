"""A sweep (`aecli train -m`): what runs at its end, and the resolvers its search config uses.

`SweepSummary`, a Hydra callback registered in conf/config.yaml, writes the sweep's summary.csv (aecli/runtable.py's
rows, every column), prints the table best first by the optimized metric, and writes the report (aecli/report.py)
when the sweep ends, also when a signal stopped it: the summary then holds what ran. A sweep folder is a folder of
run folders (`hydra.sweep.dir`/<job number>; aecli/rundir.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from aecli.metric_names import direction
from aecli.rundir import LOCK, SUMMARY, attempt_failures, lock_is_held, new_attempt, read_run
from aecli.runtable import failed, labelled_runs, print_table, row_of, runs_command, sort_rows, write_summary
from aecli.search import RUNNING_ELSEWHERE, pareto_runs, study_seed

__all__ = ["SweepSummary", "LAST_SWEEP", "runs_command", "study_seed", "summarize_sweep"]
log = logging.getLogger(__name__)


# conf/hparams_search/optuna.yaml: `direction: ${aecli_direction:${optimized_metric}}`,
# `seed: ${aecli_study_seed:${seed},${hydra.sweeper.storage},${hydra.sweeper.study_name}}`
for _name, _resolver in (("aecli_direction", direction), ("aecli_study_seed", study_seed)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


# The last sweep of this process: {"dir", "jobs", "failed", "summary"}; `aecli train -m` exits non-zero when any job
# failed.
LAST_SWEEP: dict[str, Any] = {}


def summarize_sweep(sweep_dir: Path, report: bool = True) -> None:
    """summary.csv in the sweep folder, the table (best first) and the report, of every job that ran. Every job of
    an ended sweep has ended: a job without status.json died before it could say so (failed)."""
    runs = labelled_runs([sweep_dir])
    records = [read_run(run) for run, _ in runs]  # each job folder read once, for the summary and the report
    rows = [row_of(record, label, missing_status="failed") for record, (_, label) in zip(records, runs)]
    failures = attempt_failures(sweep_dir)
    front = pareto_runs(sweep_dir)  # a multi-objective study's Pareto front (hydra_plugins/aecli_optuna_sweeper)
    elsewhere = RUNNING_ELSEWHERE.get(str(sweep_dir), set())
    for record, row in zip(records, rows):
        if row["run"] in failures:
            row.update(failures[row["run"]])
        if not record.status and (row["run"] in elsewhere or lock_is_held(sweep_dir / row["run"] / LOCK)):
            row["status"] = "running"  # another worker's trial, still training
        if front is not None:
            row["pareto"] = row["run"] in front
    summary = write_summary(rows, sweep_dir / SUMMARY)
    not_ok = failed(rows)
    LAST_SWEEP.update(dir=str(sweep_dir), jobs=len(rows), failed=not_ok, summary=str(summary))
    pruned = sum(r["status"] == "pruned" for r in rows)
    print_table(sort_rows(rows), f"sweep {sweep_dir}: {len(rows)} jobs" + (f", {not_ok} failed" if not_ok else "")
                + (f", {pruned} pruned" if pruned else ""))
    print(f"summary: {summary}", flush=True)
    if front is not None:
        print(f"Pareto front: runs {', '.join(front) or 'none'}", flush=True)
    if report:  # the page of the whole sweep (aecli/report.py); report=false skips it
        from aecli.report import REPORT_FILE, write_report

        try:
            print(f"report: {write_report(rows, records, sweep_dir / REPORT_FILE, sweep_dir.resolve())}", flush=True)
        except Exception as e:  # the sweep has ended and its summary is written: say why, do not fail it
            logging.getLogger("aecli").warning(f"report: not written ({type(e).__name__}: {e})")


class SweepSummary(Callback):
    """At the end of a multirun: summary.csv in the sweep folder, the table on the console, the report."""

    def on_multirun_start(self, config, **kwargs) -> None:
        new_attempt(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            summarize_sweep(sweep_dir, bool(config.get("report", True)))
