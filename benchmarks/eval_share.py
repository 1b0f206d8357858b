"""What the evaluation at the end of a run costs next to its training (issue 20): the README's first command,
`aecli train model=vae data=mnist epochs=10`, through the real CLI, twice: once with an empty eval cache (the
one-time feature classifier and pixel floors included) and once with the cache the first run filled (what every
later run pays). Training seconds are the sum of the epochs' own seconds (train.log), evaluation seconds the
span from the end of training to the run's last line; the eval stages' own lines are printed beside them.

    uv run python benchmarks/eval_share.py                    # the README's command, 10 epochs (a few minutes)
    uv run python benchmarks/eval_share.py --epochs 3         # the short run of the issue
    options: --data-root DIR (default $AECLI_DATA_ROOT)  --out DIR (default /tmp/aecli-eval-share)
             --threads N (trainer.num_threads; default: aecli's own)

Run it on a quiet machine: other processes on the cores change both numbers, not by the same factor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
EPOCH_SECONDS = re.compile(r"^\[[^]]*\]\[INFO\] epoch \d+/\d+ .* ([\d.]+)s$")


def stamp(line: str) -> dt.datetime | None:
    m = STAMP.match(line)
    return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") if m else None


def shares(log_text: str) -> dict:
    """Training seconds (the epochs' own), evaluation seconds (the end of training to the last line) and the eval
    stages' lines, from a run's train.log."""
    lines = log_text.splitlines()
    train = sum(float(m.group(1)) for m in map(EPOCH_SECONDS.match, lines) if m)
    done = next((stamp(ln) for ln in lines if "][INFO] done: " in ln), None)
    last = next((stamp(ln) for ln in reversed(lines) if stamp(ln)), None)
    if done is None or last is None:
        raise SystemExit("the run's train.log has no `done:` line: did training end?")
    return {"train_s": train, "eval_s": (last - done).total_seconds(),
            "stages": [ln.split("][INFO] ", 1)[1] for ln in lines if "][INFO] eval: " in ln]}


def run(out: Path, name: str, epochs: int, cache: Path, data_root: str | None, threads: int | None) -> dict:
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = ["uv", "run", "aecli", "train", "model=vae", "data=mnist", f"epochs={epochs}", f"eval.cache_dir={cache}",
           f"hydra.run.dir={run_dir}"]
    cmd += [f"data.root={data_root}"] if data_root else []
    cmd += [f"trainer.num_threads={threads}"] if threads else []
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return shares((run_dir / "train.log").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-root", default=os.environ.get("AECLI_DATA_ROOT"))
    p.add_argument("--out", type=Path, default=Path("/tmp/aecli-eval-share"))
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    cache = a.out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    rows = [("empty cache", run(a.out, "first", a.epochs, cache, a.data_root, a.threads)),
            ("cache filled", run(a.out, "second", a.epochs, cache, a.data_root, a.threads))]
    for label, r in rows:
        print(f"\n{label}: training {r['train_s']:.1f}s ({a.epochs} epochs), evaluation {r['eval_s']:.1f}s "
              f"({r['eval_s'] / max(r['train_s'], 1e-9):.2f} of the training)")
        for line in r["stages"]:
            print("   ", line)
    sys.exit(0)


if __name__ == "__main__":
    main()
