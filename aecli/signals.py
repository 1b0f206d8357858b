"""Stop signals: Ctrl-C, SIGTERM and SIGUSR1 end a run without losing it (docs/robustness.md).

During training a signal only sets a flag (`StopSignals.received`) that the loop reads after each step: the step
finishes, last.pt is written, and `Interrupted` ends the run with exit code 128 + the signal. A second signal stops
at once. Work that can simply be redone (the evaluation at the end of a run) is `interruptible`: the signal raises
`Interrupted` there and then.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from aecli.errors import AecliError
from aecli.rundir import CHECKPOINTS, LAST

log = logging.getLogger("aecli")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # SIGUSR1: SLURM's warning before the time limit


class Interrupted(AecliError):
    """Ctrl-C, SIGTERM or SIGUSR1: the step finished and last.pt was written (`stage` training), or the evaluation
    at the end stopped (`stage` evaluation); the exit code is 128 + the signal."""

    def __init__(self, message: str, signum: int, stage: str = "training"):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.stage = stage


@contextmanager
def handling(handler):
    """`handler` on every stop signal inside the block (main thread only: elsewhere signals cannot be caught);
    yields the handlers it replaced, restored at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield previous
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def interruptible(where: str, stage: str):
    """Turn a stop signal into `Interrupted` at once (nothing to finish first): for work that can simply be redone,
    such as the evaluation at the end of a run."""
    def handler(signum, frame):
        raise Interrupted(f"{signal.Signals(signum).name} {where}", signum, stage)

    with handling(handler):
        yield


class StopSignals:
    """The training loop's signal flag: `with signals.caught():` a stop signal sets `received` (the loop reads it
    after each step); a second one stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    @contextmanager
    def caught(self):
        def handler(signum, frame):
            if self.received:
                raise KeyboardInterrupt
            self.received = signum
            log.warning(f"{signal.Signals(signum).name}: finishing the current step, then writing "
                        f"{CHECKPOINTS}/{LAST} (send it again to stop at once)")

        with handling(handler) as self.previous:
            yield self

    def interrupted(self, message: str) -> Interrupted:
        """The exception that ends an interrupted run, last.pt written. A SIGUSR1 is then handed to the handler it
        replaced, if any: submitit's, which requeues a SLURM job (that job continues with resume=auto)."""
        signum = self.received or signal.SIGTERM
        previous = self.previous.get(signum)
        if signum == signal.SIGUSR1 and callable(previous):
            previous(signum, None)
        return Interrupted(f"{signal.Signals(signum).name} {message}", signum)
