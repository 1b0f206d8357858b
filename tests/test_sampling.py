"""aecli/sampling.py: `aecli sample` on trained runs of two models."""

from __future__ import annotations

import pytest
import torch

from aecli.sampling import sample_command
from conftest import run_cli, tiny_overrides


# -- end to end: the CLI trains and samples -------------------------------------------------------------
@pytest.mark.slow
def test_cli_trains_and_samples_two_models(data_root, tmp_path):
    out = run_cli("train", "-m", *tiny_overrides(data_root, net="conv", model="aae,sae"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {torch.load(p, weights_only=False)["config"]["model"]["_target_"].split(".")[-1]: p.parent.parent
            for p in tmp_path.glob("outputs/multirun/*/*/*/checkpoints/best.pt")}
    assert set(runs) == {"AAE", "SAE"}
    for name, run_dir in runs.items():
        sample = run_cli("sample", f"run={run_dir}", "n=16", "seed=1", cwd=tmp_path) if name == "AAE" else None
        if sample is not None:
            assert sample.returncode == 0, sample.stderr[-2000:]
        else:  # the same command in-process, to keep the test short
            sample_command(str(run_dir), n=16, seed=1, device="cpu")
        assert (run_dir / "images" / "samples_seed1.png").is_file()
