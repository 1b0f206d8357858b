"""The wall time of a sweep that should fill one machine (issue 14): 8 models x 2 data sets, one process.

    uv run python benchmarks/sweep.py                         # the issue's sweep: 30 epochs, joblib n_jobs=6, cuda
    uv run python benchmarks/sweep.py --device cpu --epochs 1 --limit 2000 --n-jobs 2    # a smoke run on a CPU
    options: --data-root DIR (default $AECLI_DATA_ROOT)  --out DIR (default a temporary folder)  --no-eval

It runs `aecli train -m model=ae,cae,dae,sae,vae,cvae,aae,pca data=mnist,fashion_mnist epochs=E
hydra/launcher=joblib hydra.launcher.n_jobs=N device=D` (eval at the end, as a researcher runs it) through the
real CLI, and prints the machine, the total wall time, each job's seconds from summary.csv, and how many jobs
ended ok: a job lost is a failure of the benchmark, not a slow number. The target (one H100): at most 90 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = "ae,cae,dae,sae,vae,cvae,aae,pca"
DATA = "mnist,fashion_mnist"


def machine(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()}; torch {torch.__version__})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n-jobs", type=int, default=6)
    ap.add_argument("--limit", type=int, default=None, help="training images per job (default: all)")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--data-root", default=os.environ.get("AECLI_DATA_ROOT"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not a.data_root:
        raise SystemExit("give --data-root DIR or set AECLI_DATA_ROOT (a folder holding MNIST/raw)")
    out = Path(a.out or tempfile.mkdtemp(prefix="aecli-sweep-bench-")) / "sweep"
    args = [sys.executable, "-m", "aecli.cli", "train", "-m", f"model={MODELS}", f"data={DATA}",
            f"epochs={a.epochs}", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.n_jobs}", f"device={a.device}",
            f"eval.at_end={'false' if a.no_eval else 'true'}", "report=false", f"hydra.sweep.dir={out}"]
    if a.limit:
        args.append(f"data.limit={a.limit}")
    env = {**os.environ, "AECLI_DATA_ROOT": a.data_root, "PYTHONUNBUFFERED": "1"}
    print(f"machine: {machine(a.device)}\ncommand: aecli {' '.join(args[3:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary = out / "summary.csv"
    rows = list(csv.DictReader(open(summary, newline=""))) if summary.is_file() else []
    ok = [r for r in rows if r["status"] == "ok"]
    print("\n| job | overrides | status | seconds |\n| --- | --- | --- | ---: |")
    for r in rows:
        print(f"| {r['run']} | {r['overrides']} | {r['status']} | {float(r['seconds'] or 'nan'):.1f} |")
    print(f"\n16 jobs ({a.epochs} epochs each, {a.n_jobs} at a time, eval {'off' if a.no_eval else 'on'}): "
          f"{wall:.1f} s wall, {len(ok)} of {len(rows) or 16} ok (exit {proc.returncode})")
    if proc.returncode != 0 or len(ok) != 16:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
