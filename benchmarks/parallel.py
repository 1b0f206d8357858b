"""Two runs at once against the same two one after the other, with trainer.num_threads=auto (issue 19).

    uv run python benchmarks/parallel.py                     # VAE on MNIST, 5 epochs of 20,000 images, CPU
    uv run python benchmarks/parallel.py --epochs 1 --limit 1000 --hidden 64   # a smoke run (seconds)
    options: --data-root DIR (default $AECLI_DATA_ROOT)  --threads auto|N|null  --device cpu|auto|cuda

Each run is `aecli train` through the real CLI on real data (seed 0 and seed 1, the same setup otherwise). The
script times both one after the other, then both started together, and prints the two wall times and their
ratio, together / one after the other: 1.0 means running two at once costs nothing over running them in turn;
torch's default threads on a shared machine give 3-10x. The target with num_threads=auto: at most 1.1. Run it
on a quiet machine: its number is about the machine's other work as much as about aecli.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def command(a: argparse.Namespace, seed: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "aecli.cli", "train", f"seed={seed}", f"epochs={a.epochs}", f"data.limit={a.limit}",
            f"net.hidden=[{a.hidden}]", f"trainer.num_threads={a.threads}", f"device={a.device}", "eval.at_end=false",
            "trainer.progress=lines", f"hydra.run.dir={out / f'seed{seed}'}"]


def run_all(commands: list[list[str]], together: bool, env: dict) -> float:
    """Wall seconds for the commands, started together or one after the other; a failed run stops the script."""
    start = time.perf_counter()
    if together:
        procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in commands]
        results = [(p, *p.communicate()) for p in procs]
    else:
        results = []
        for c in commands:
            p = subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            results.append((p, *p.communicate()))
    wall = time.perf_counter() - start
    for p, _, err in results:
        if p.returncode != 0:
            raise SystemExit(f"a run failed (exit {p.returncode}): {err.strip()[-500:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--limit", type=int, default=20000, help="training images per run")
    ap.add_argument("--hidden", type=int, default=512, help="the MLP's hidden width")
    ap.add_argument("--threads", default="auto", help="trainer.num_threads of both runs: auto, N or null")
    ap.add_argument("--device", default="cpu", choices=("cpu", "auto", "cuda"))
    ap.add_argument("--data-root", default=os.environ.get("AECLI_DATA_ROOT"))
    a = ap.parse_args()
    if not a.data_root:
        raise SystemExit("give --data-root DIR or set AECLI_DATA_ROOT (a folder holding MNIST/raw)")
    env = {**os.environ, "AECLI_DATA_ROOT": a.data_root, "PYTHONUNBUFFERED": "1"}
    root = Path(tempfile.mkdtemp(prefix="aecli-parallel-bench-"))
    print(f"machine: {len(os.sched_getaffinity(0))} usable cores, load {os.getloadavg()[0]:.2f}; "
          f"runs: {' '.join(command(a, 0, root)[3:-1])}", flush=True)
    in_turn = run_all([command(a, s, root / "in_turn") for s in (0, 1)], together=False, env=env)
    together = run_all([command(a, s, root / "together") for s in (0, 1)], together=True, env=env)
    print(f"one after the other: {in_turn:.1f} s\ntogether:            {together:.1f} s\n"
          f"ratio together / in turn: {together / in_turn:.2f} (target <= 1.1)")


if __name__ == "__main__":
    main()
