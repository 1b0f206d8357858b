"""What a run prints while it trains: a rich progress bar on a terminal, one line per epoch otherwise.

The bar advances every step from host-side counters only; the running loss it shows is read from the device
after the first step and then every `trainer.log_every` steps (every step on the CPU, where reading is free), so
the display never forces a host sync per step on CUDA and shows a loss from the start of every epoch.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("aecli")


def interactive() -> bool:
    return sys.stdout.isatty()


def sweep_job() -> int | None:
    """The job's number inside a multirun (Hydra sets it before it configures the job's logging), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:  # not inside a Hydra job
        return None
    return hc.job.num if hc.mode == RunMode.MULTIRUN else None


def console_handler() -> logging.Handler:
    """The console log handler (Hydra's job_logging points here): rich on a terminal, plain otherwise.

    In a sweep every line starts with the job number, so jobs running side by side stay legible."""
    job = sweep_job()
    if interactive() and job is None:
        from rich.logging import RichHandler

        return RichHandler(show_time=False, show_level=False, show_path=False, markup=False)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s" if job is None else f"[job {job}] %(message)s"))
    return handler


class EpochProgress:
    """A context manager around one epoch: `step(n_images)` every step, `show_loss(value)` now and then."""

    def __init__(self, epoch: int, epochs: int, steps: int, bar: bool):
        self.epoch, self.epochs, self.steps, self.bar = epoch, epochs, steps, bar
        self.images = 0
        self.start = time.perf_counter()
        self._progress = None

    def __enter__(self):
        if self.bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"epoch {self.epoch}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8} img/s"), TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.steps, rate="-", loss="-")
        return self

    def step(self, n_images: int) -> None:
        self.images += n_images
        if self._progress is not None:
            self._progress.update(self._task, advance=1, rate=f"{self.images_per_s:,.0f}")

    def show_loss(self, value: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{value:.3f}")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False


def start_line(model, cfg, data, device, baseline: float, run_dir) -> str:
    """The line a run starts with: the model, where it runs, the data and the mean image's val_recon."""
    import torch

    n_params = sum(p.numel() for p in model.parameters())
    where = (f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
             else f"cpu ({torch.get_num_threads()} threads)")
    net = "none" if "net" in model.ignores else model.net_description
    return (f"model {model.name} ({n_params:,} parameters, net {net}, latent_dim {cfg.latent_dim}, lambda "
            f"{cfg['lambda']}) on {where}; data {data.name}: {len(data.train)} train, {len(data.val)} val images of "
            f"{list(data.image_shape)} (the mean image scores val_recon {baseline:.1f}); run folder {run_dir}")


def epoch_line(row: dict, epochs: int) -> str:
    """The line an epoch ends with: its train and val terms, its speed and its time."""
    terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items()
                      if k.startswith(("train_", "val_")) and isinstance(v, (int, float)))
    return f"epoch {row['epoch']}/{epochs}  {terms}  {row['images_per_s']:,.0f} img/s  {row['seconds']:.1f}s"


class StageProgress:
    """A stage of work that is not a training epoch (one metric of an evaluation, the one-time classifier), as a
    context manager: on a terminal a rich line that spins (or fills, given `total`, by `advance(n)`) while it runs
    and stays, ticked, with its time after; otherwise one log line with its time when it ends."""

    def __init__(self, what: str, total: int | None = None, bar: bool | None = None):
        self.what, self.total = what, total
        self.bar = interactive() if bar is None else bar
        self._progress = None

    def __enter__(self):
        self.start = time.perf_counter()
        if self.bar:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            columns = [SpinnerColumn(finished_text="[green]✓"), TextColumn(self.what), TimeElapsedColumn()]
            if self.total is not None:
                columns[2:2] = [BarColumn(), MofNCompleteColumn()]
            self._progress = Progress(*columns)
            self._progress.start()
            self._task = self._progress.add_task(self.what, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def __exit__(self, exc_type, *exc):
        if self._progress is not None:
            if exc_type is None:
                self._progress.update(self._task, total=self.total or 1, completed=self.total or 1)
            self._progress.stop()
        elif exc_type is None:
            log.info(f"{self.what}: {time.perf_counter() - self.start:.1f}s")
        return False
