"""A run folder: its layout's names, and (as the rest moves here) reading and writing what it holds.

    RUN/.hydra/                 Hydra's record of the config and overrides
    RUN/train.log               the run's log
    RUN/status.json             how the run ended (ok, failed, interrupted, pruned)
    RUN/metrics.csv             one row per epoch
    RUN/eval.json               the evaluation of a checkpoint
    RUN/checkpoints/last.pt     the latest state (resume from it)
    RUN/checkpoints/best.pt     the best epoch's state
    RUN/images/*.png            reconstruction and sample grids
    RUN/plots/*.png             curves
    SWEEP/summary.csv           a sweep's table of runs

This module is the only place these names are written; everything that reads or writes a run goes through it.
"""

from __future__ import annotations

from pathlib import Path

HYDRA = ".hydra"
TRAIN_LOG = "train.log"
STATUS = "status.json"
METRICS = "metrics.csv"
EVAL = "eval.json"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
IMAGES = "images"
PLOTS = "plots"
SUMMARY = "summary.csv"
LOCK = ".lock"
ATTEMPTS = ".attempts"


class RunDir:
    """The paths of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def hydra(self) -> Path:
        return self.path / HYDRA

    @property
    def status(self) -> Path:
        return self.path / STATUS

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def eval(self) -> Path:
        return self.path / EVAL

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint(self, which: str = "last") -> Path:
        """checkpoints/last.pt or checkpoints/best.pt (`which`: last or best)."""
        return self.checkpoints / {"last": LAST, "best": BEST}[which]

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    @property
    def images(self) -> Path:
        return self.path / IMAGES

    @property
    def plots(self) -> Path:
        return self.path / PLOTS
