"""The real `aecli` CLI end to end, in a subprocess, on laid-out data."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from aecli.plots import GRID_FONT

from conftest import REPO, cli_error, run_cli, tiny_overrides


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in (cwd / "outputs").glob("*/*/metrics.csv"))


@pytest.fixture(scope="module")
def vae_run(data_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    proc = run_cli("train", *tiny_overrides(data_root, epochs=2), cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = run_dirs(cwd)
    return run, proc


@pytest.mark.slow
def test_train_writes_every_output(vae_run):
    run, proc = vae_run
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    assert (run / "train.log").read_text().strip()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("epoch", "step", "train_loss", "val_loss", "val_recon", "train_recon", "train_kl", "val_kl",
                "seconds", "images_per_s"):
        assert key in rows[0], key
    assert int(rows[1]["step"]) == 2 * 4  # 512 images / batch 128, two epochs
    for r in rows:
        assert all(math.isfinite(float(r[k])) for k in ("train_loss", "val_loss", "val_recon"))
        assert 0 < float(r["val_recon"]) < 800  # nats per image over 784 pixels
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])
    for name in ("last", "best"):
        ckpt = torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)
        assert {"model", "epoch", "config"} <= set(ckpt)
        assert ckpt["config"]["model"]["_target_"] == "aecli.models.vae.VAE"
        assert isinstance(ckpt["config"], dict) and ckpt["config"]["data"]["limit"] == 512
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    for image in ("images/recon_epoch_001.png", "images/recon_epoch_002.png", "images/samples_epoch_002.png",
                  "plots/loss.png"):
        with Image.open(run / image) as im:
            im.load()
            assert im.size[0] > 50 and im.size[1] > 50
    out = proc.stdout + proc.stderr
    assert "epoch 2/2" in out and "best val_loss" in out and str(run.name) in out
    assert "on cpu" in out  # the device it runs on is said at start
    assert "Traceback" not in out


@pytest.mark.slow
def test_sample_writes_a_grid_where_it_says(vae_run, tmp_path):
    run, _ = vae_run
    target = tmp_path / "grid.png"
    proc = run_cli("sample", f"run={run}", "n=16", f"out={target}", "seed=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(target) in proc.stdout
    with Image.open(target) as im:  # 4x4 cells of 28 pixels drawn at 2x with their padding, under a title line
        assert im.size[0] == 4 * 56 + 5 * 4 and im.size[1] == 4 * 56 + 5 * 4 + GRID_FONT + 12  # the title
    again = tmp_path / "again.png"
    run_cli("sample", f"run={run}", "n=16", f"out={again}", "seed=3", cwd=tmp_path)
    assert target.read_bytes() == again.read_bytes()  # the seed fixes the samples
    first = run_cli("sample", f"run={run}", "n=4", cwd=tmp_path)
    second = run_cli("sample", f"run={run}", "n=4", cwd=tmp_path)  # the same name taken: a new one, never replaced
    assert first.returncode == second.returncode == 0 and str(run) in first.stdout
    assert "samples_seed0.png" in first.stdout and "samples_seed0_1.png" in second.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (("n=100000",), "one grid holds 1 to 1024 images"),
    (("out=grid",), "out=grid has no image type"),
    (("out=grid.bmpx",), "out=grid.bmpx has no image type"),
])
def test_sample_refuses_what_it_cannot_write_in_one_line(vae_run, tmp_path, args, needle):
    run, _ = vae_run
    proc = run_cli("sample", f"run={run}", *args, cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "eval", "runs", "report"])
def test_every_command_has_its_own_help(command, tmp_path):
    proc = run_cli(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: aecli {command}")


@pytest.mark.slow
def test_help_and_composed_config(tmp_path):
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0 and all(c in top.stdout for c in ("train", "sample", "eval", "runs"))
    train_help = run_cli("train", "--help", cwd=tmp_path)
    assert train_help.returncode == 0
    for group in ("model:", "data:", "device:", "net:"):
        assert group in train_help.stdout
    job = run_cli("train", "--cfg", "job", "lambda=7", "data=fashion_mnist", cwd=tmp_path)
    assert job.returncode == 0 and "lambda: 7" in job.stdout and "aecli.datasets.fashion_mnist.FashionMNIST" in job.stdout
    assert not (tmp_path / "outputs").exists()  # printing the config runs nothing


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (("model=nope",), "model=nope"),
    (("lambda=-2",), "lambda"),
    (("lambda=abc",), "lambda"),
    (("device=cuda",), "cuda"),
    (("data.root=/nonexistent/aecli", "data.download=false"), "/nonexistent/aecli/MNIST/raw"),
    (("nokey=3",), "nokey is not a key"),
    (("+foo=1",), "foo is not a key aecli reads"),
    (("net.activation=[relu]",), "net.activation=['relu'] is not allowed"),
    (("data.val_size=59999",), "allowed 1..30000 (at least half of them stay for training)"),
    (("hydra/launcher=submitit_slurm", "epochs=1", "-m"), "submitit_slurm submits to a SLURM cluster"),
    (("model.noise=gaussian",), "model.noise is not a key"),
    (("lambda=1,10",), "add -m"),
    (("lambda",), "key=value"),
])
def test_bad_input_is_one_line_and_non_zero(args, needle, tmp_path, data_root):
    if "cuda" in args[0] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    extra = () if any(a.startswith("data.root") for a in args) else (f"data.root={data_root}",)
    proc = run_cli("train", *extra, *args, cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert err.count("\n") == 0 and err.startswith("aecli: ") and needle in err, err


@pytest.mark.slow
def test_sample_of_a_missing_run_is_one_line(tmp_path):
    proc = run_cli("sample", f"run={tmp_path / 'nope'}", cwd=tmp_path)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("aecli: ") and "\n" not in proc.stderr.strip()


@pytest.mark.slow
def test_tab_completion_completes_in_bash_directly_and_through_uv_run(tmp_path):
    """The script `aecli train -sc install=bash` prints, sourced in bash, completes `aecli train model=c` and
    `uv run aecli train model=c` (the way the README runs aecli), as bash's completion would call it."""
    install = run_cli("train", "-sc", "install=bash", cwd=tmp_path)
    assert install.returncode == 0 and "hydra_bash_completion" in install.stdout
    (tmp_path / "complete.sh").write_text(install.stdout)
    probe = """
source complete.sh
for line in "aecli train model=c" "uv run aecli train model=c" "uv run aecli train data=fa" "uv run aecli tr" \
            "aecli sa" "aecli sample r"; do
  COMP_LINE="$line"; COMP_POINT=${#line}; read -a COMP_WORDS <<< "$line"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  if [ "${COMP_WORDS[0]}" == "uv" ]; then _aecli_uv_completion; else hydra_bash_completion; fi
  echo "$line -> ${COMPREPLY[*]}"
done"""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines == ["aecli train model=c -> model=cae model=cvae", "uv run aecli train model=c -> model=cae model=cvae",
                     "uv run aecli train data=fa -> data=fashion_mnist", "uv run aecli tr -> train",
                     "aecli sa -> sample", "aecli sample r -> run="], proc.stdout + proc.stderr
    assert "could not start" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_bad_eval_setting_is_refused_before_training(tmp_path, data_root):
    proc = run_cli("train", *tiny_overrides(data_root, **{"eval.at_end": "true", "eval.iw_samples": 0}), cwd=tmp_path)
    assert proc.returncode != 0 and "eval.iw_samples=0" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/metrics.csv"))  # no epoch ran


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--help",), ("sample", "--help"), ("train", "-sc", "install=bash"),
                                  ("train", "--help"), ("--version",)])
def test_a_reader_that_goes_away_ends_the_command_quietly(args, tmp_path):
    """`aecli --help | head -1`: the pipe closes before aecli writes; it stops quietly, as Unix tools do (exit 0, or
    141 as a tool killed by SIGPIPE), with no traceback and no "the run could not start"."""
    exe = shutil.which("aecli")
    cmd = [exe] if exe else [sys.executable, "-m", "aecli.cli"]
    proc = subprocess.Popen([*cmd, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141) and err == "", err


@pytest.mark.slow
def test_version_names_aecli_and_torch(tmp_path):
    from importlib.metadata import version

    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"aecli {version('aecli')} ")
    assert f"torch {version('torch')}" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (("model=vae,", "lambda=1"), "model=vae, ends in a comma: overrides are separated by spaces, not commas; write "
                                 "model=vae lambda=1"),
    (("data=images", "data.path=~/x.npz"), "data.path=~/x.npz: ~ is not expanded inside an override; write "
                                           "data.path=" + str(Path("~/x.npz").expanduser())),
    (("net=conv", "net.hidden=[64]"), "net.hidden is not a key of this config: the conv net's keys are net.channels, "
                                      "net.activation; net.hidden is a key of net=mlp"),
])
def test_typical_typos_name_what_was_typed_and_what_to_write(args, needle, tmp_path):
    proc = run_cli("train", *args, cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.count("\n") == 0 and needle in err, err
    assert not (tmp_path / "outputs").exists()


def test_a_bad_value_fails_the_cli_before_any_work(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, "train", f"data.root={data_root}", "epochs=0", "hydra.run.dir=run")
    assert code == 2 and "epochs=0 is not allowed" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_start_up_imports_nothing_heavy_before_the_first_step(data_root):
    # what a run imports before its first step: the config, the model, the data. Not torchvision (only a
    # download needs it), not matplotlib (the loss plot at the end), not rich (only a terminal's bar).
    code = f"""
import sys
from hydra import compose, initialize_config_dir
from aecli.paths import config_dir
from aecli.loop import Trainer
with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
    cfg = compose(config_name="config", overrides={tiny_overrides(data_root)!r})
trainer = Trainer(cfg, {str(data_root / "unused-run")!r})
heavy = [m for m in ("torchvision", "matplotlib", "rich", "PIL", "pandas", "scipy") if m in sys.modules]
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout
