"""Does the contractive autoencoder learn, and what does lambda do? The targets of "Every model learns", measured
through the real CLI (`aecli train` in a subprocess, eval at the end), printed as tables.

    uv run python benchmarks/learning.py              # ~25 min on 2 CPU cores: targets 1-2 and the lambda curve
    uv run python benchmarks/learning.py --quick      # ~4 min: target 1 and a short lambda curve
    options: --data-root DIR (default $AECLI_DATA_ROOT)  --out DIR (run folders; default a temporary folder)

1. The sigmoid code learns from the first epoch: `model=cae` and `model=ae model.code_activation=sigmoid`, each
   `data.limit=20000 data.val_size=1000 epochs=3`, end at val_recon <= 150 nats (the mean image scores ~213).
2. The design card's command, `model=cae lambda=100 epochs=10` on the full MNIST: test recon_bce <= 120, probe
   accuracy >= 0.85, and a mean ||J_f(x)||_F below the plain ae's (`model=ae epochs=10`).
3. The lambda curve: test recon_bce, ||J_f||_F and probe accuracy against lambda for the default cae (3 epochs on
   20,000 images; --quick: 1 epoch on 10,000).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST_EVAL = ["eval.frechet_images=2000", "eval.mmd_images=1000", "eval.pictures=false"]


def train(out: Path, name: str, *overrides: str) -> dict:
    """One `aecli train` run; its last metrics row and eval.json, and the wall time."""
    run = out / name
    if run.exists():
        shutil.rmtree(run)
    cmd = [sys.executable, "-m", "aecli.cli", "train", *overrides, f"hydra.run.dir={run}", "trainer.progress=lines"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(overrides)} failed:\n{proc.stderr[-2000:]}")
    import csv

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    result = {"val_recon": float(rows[-1]["val_recon"]), "seconds": time.perf_counter() - start,
              "collapse": rows[-1].get("collapse", "")}
    if (run / "eval.json").is_file():
        result.update(json.loads((run / "eval.json").read_text()))
    return result


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data-root", default=os.environ.get("AECLI_DATA_ROOT"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not a.data_root:
        raise SystemExit("give --data-root DIR or set AECLI_DATA_ROOT (a folder holding MNIST/raw)")
    out = Path(a.out or tempfile.mkdtemp(prefix="aecli-learning-"))
    base = [f"data.root={a.data_root}", "device=cpu"]
    print(f"run folders: {out}\n")

    print("## 1. The sigmoid code learns (data.limit=20000 data.val_size=1000 epochs=3; target val_recon <= 150)\n")
    print("| model | val_recon after 3 epochs | target | seconds |\n| --- | ---: | --- | ---: |")
    short = [*base, "data.limit=20000", "data.val_size=1000", "epochs=3", "eval.at_end=false"]
    for name, label, overrides in (("cae", "cae (lambda 0.1)", ["model=cae"]),
                                   ("ae_sigmoid", "ae, code_activation=sigmoid",
                                    ["model=ae", "model.code_activation=sigmoid"])):
        r = train(out, name, *overrides, *short)
        print(f"| {label} | {r['val_recon']:.1f} | {verdict(r['val_recon'] <= 150)} | {r['seconds']:.0f} |")

    if not a.quick:
        print("\n## 2. `aecli train model=cae lambda=100 epochs=10`, full MNIST "
              "(targets: recon_bce <= 120, probe >= 0.85, ||J_f||_F below the ae's)\n")
        full = [*base, "epochs=10", *FAST_EVAL]
        cae = train(out, "cae_lambda100", "model=cae", "lambda=100", *full)
        ae = train(out, "ae", "model=ae", *full)
        print("| model | test recon_bce | probe_acc | knn_acc | mean ||J_f||_F | seconds |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, r in (("cae lambda=100", cae), ("ae", ae)):
            print(f"| {label} | {r['recon_bce']:.1f} | {r['probe_acc']:.3f} | {r['knn_acc']:.3f} | "
                  f"{r['jacobian_fro']:.3g} | {r['seconds']:.0f} |")
        print(f"\nrecon_bce <= 120: {verdict(cae['recon_bce'] <= 120)}; probe >= 0.85: "
              f"{verdict(cae['probe_acc'] >= 0.85)}; ||J_f||_F below the ae's: "
              f"{verdict(cae['jacobian_fro'] < ae['jacobian_fro'])}")

    epochs, limit = (1, 10000) if a.quick else (3, 20000)
    print(f"\n## 3. What lambda does: the default cae, {epochs} epoch(s) on {limit:,} images\n")
    print("| lambda | test recon_bce | mean ||J_f||_F | probe_acc | collapse flagged |")
    print("| ---: | ---: | ---: | ---: | --- |")
    lambdas = (0, 1, 100, 10000) if a.quick else (0, 0.1, 1, 10, 100, 1000, 10000)
    for lam in lambdas:
        r = train(out, f"cae_curve_{lam}", "model=cae", f"lambda={lam}", *base, f"data.limit={limit}",
                  f"epochs={epochs}", "eval.test_images=2000", "eval.probe_train_images=5000", *FAST_EVAL)
        print(f"| {lam:g} | {r['recon_bce']:.1f} | {r['jacobian_fro']:.3g} | {r['probe_acc']:.3f} | "
              f"{r['collapse'] or '-'} |")


if __name__ == "__main__":
    main()
