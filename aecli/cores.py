"""How many CPU threads a run takes: `trainer.num_threads` (null, N or auto).

Two runs that each take torch's default (every core) on a shared machine slow each other down several times over:
their threads fight for the same cores. `auto` takes the cores that are free when the run starts: the cores this
process may use (os.sched_getaffinity) minus the ones busy with other work (the runnable tasks the kernel counts
in /proc/loadavg, or the 1-minute load average where that is missing), and at most its share when a parallel
launcher runs several jobs side by side. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_cores() -> int:
    """Cores busy with other work now: the runnable tasks in /proc/loadavg less this process (its 4th field is
    `running/total`), else the rounded 1-minute load average."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        return max(0, running - 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.getloadavg()[0])
    except OSError:
        return 0


def threads_for(setting: int | str | None, share: int | None = None) -> int | None:
    """Torch threads for `trainer.num_threads`: None for null (torch's default), N for a number, and for `auto`
    the free cores (usable minus busy, at least 1), at most `share` (a parallel launcher's cores per job)."""
    if setting is None:
        return None
    if str(setting) != "auto":
        return int(setting)
    cores = usable_cores()
    free = max(1, cores - busy_cores())
    return max(1, min(free, share or cores))
