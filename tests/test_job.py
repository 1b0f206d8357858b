"""One `aecli train` job (aecli/job.py): the run folder it may write into, how a run ends (status.json ok, failed,
interrupted, pruned), resume=auto's one rule, and a refused run that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from aecli import job, rundir
from aecli.cli import main
from aecli.errors import AecliError, Pruned
from aecli.job import check_new_run_dir
from aecli.signals import Interrupted
from aecli.loop import Trainer
from conftest import cli_error, tiny_overrides
from test_resume import compose_tiny, fast_data, shared_data  # noqa: F401  (fixtures)


def test_a_new_run_never_writes_into_an_existing_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"precious")
    before = sorted(p.name for p in run.rglob("*"))
    code, err = cli_error(capsys, "train", f"hydra.run.dir={run}")
    assert code == 2 and f"hydra.run.dir={run} already holds a run" in err and f"resume={run}" in err
    assert sorted(p.name for p in run.rglob("*")) == before  # Hydra never started: no .hydra/ written
    with pytest.raises(AecliError, match="already holds a run"):  # and again inside the task
        check_new_run_dir(run)
    check_new_run_dir(tmp_path / "fresh")


def test_an_unwritable_output_folder_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = cli_error(capsys, "train", f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert code == 2 and f"cannot write the run folder {tmp_path / 'file' / 'run'}" in err


@pytest.mark.slow
def test_a_folder_whose_run_never_trained_is_reused(tmp_path, data_root):
    """A bad value found inside the run (here an optimized_metric this model does not write) leaves no run that
    trained (a failed status.json, or no folder when only Hydra's record was written); the corrected command with
    the same hydra.run.dir then runs, where it was refused."""
    from conftest import run_cli

    bad = run_cli("train", *tiny_overrides(data_root), "optimized_metric=val_nope", "hydra.run.dir=run", cwd=tmp_path)
    assert bad.returncode == 2 and "optimized_metric=val_nope" in bad.stderr
    good = run_cli("train", *tiny_overrides(data_root), "hydra.run.dir=run", cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-2000:]


def test_thread_share(monkeypatch):
    monkeypatch.setattr(job, "available_cores", lambda: 16)
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert job.thread_share({"_target_": joblib, "n_jobs": 4}) == 4
    assert job.thread_share({"_target_": joblib, "n_jobs": -1}) == 1  # -1: all 16 cores, 16 jobs at a time
    assert job.thread_share({"_target_": joblib, "n_jobs": -9}) == 2  # 16 + 1 - 9 = 8 jobs at a time
    assert job.thread_share({"_target_": joblib, "n_jobs": 64}) == 1
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert job.thread_share({"_target_": local, "cpus_per_task": 3}) == 3
    assert job.thread_share({"_target_": local, "cpus_per_task": None}) is None
    assert job.thread_share({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}) is None


# -- how a job ends -----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_run_refused_before_it_starts_leaves_no_folder(tmp_path, capsys, monkeypatch, data_root):
    """device=cuda without a GPU: one line, and no "failed" run folder in outputs/ (there was one)."""
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, "train", *tiny_overrides(data_root), "device=cuda")
    assert code == 2 and "device=cuda" in err
    assert list(tmp_path.glob("outputs/*/*")) == []


def pruned_training(cfg, run_dir, **kwargs):
    """What the trainer does when a search's pruner stops it: the epoch's rows and checkpoint are on disk."""
    run = rundir.RunDir(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    run.last.write_bytes(b"epoch 1")
    rundir.write_metrics(run_dir, [{"epoch": 1, "val_loss": 300.0, "val_recon": 290.0}])
    raise Pruned("pruned by the search after epoch 1: val_recon 290 is behind the median")


def test_a_pruned_run_ends_pruned_not_failed(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"resume": None, "optimized_metric": "val_recon", "epochs": 3})
    monkeypatch.setattr(job, "run_training", pruned_training)
    with pytest.raises(Pruned) as e:  # a single run: exit 4 (the CLI says it in one line)
        job.train_one(cfg, tmp_path / "run", [])
    assert e.value.exit_code == 4
    status = rundir.read_status(tmp_path / "run")
    assert status["status"] == "pruned" and "behind the median" in status["error"]
    assert rundir.RunDir(tmp_path / "run").last.is_file() and rundir.read_metrics(tmp_path / "run")  # kept
    # in a sweep: not a failure, the sweep goes on, and the sweep exits 0
    sweep = tmp_path / "sweep"
    assert job.train_one(cfg, sweep / "0", [], multirun=True, sweep_dir=sweep, job_num=0) is None
    assert rundir.read_status(sweep / "0")["status"] == "pruned" and rundir.attempt_failures(sweep) == {}
    from aecli.sweep import LAST_SWEEP, summarize_sweep

    summarize_sweep(sweep, report=False)
    assert LAST_SWEEP["failed"] == 0 and LAST_SWEEP["jobs"] == 1


def test_resuming_a_pruned_run_says_so(tmp_path, monkeypatch, caplog):
    """resume=auto keeps a pruned run and says how to continue it; resume=RUN continues it, saying it was pruned."""
    run = tmp_path / "run"
    rundir.write_status(run, "pruned", 1.0, "pruned", optimized={"val_recon": 290.0})
    cfg = OmegaConf.create({"resume": "auto", "optimized_metric": "val_recon", "epochs": 3})
    with caplog.at_level("INFO", logger="aecli"):
        assert job.train_one(cfg, run, ["resume=auto"]) == 290.0
    assert "was pruned by its search" in caplog.text and f"resume={run}" in caplog.text
    caplog.clear()
    monkeypatch.setattr(job, "run_training", lambda *a, **k: job.Outcome("val_recon", 280.0, []))
    cfg = OmegaConf.create({"resume": str(rundir.RunDir(run).last), "optimized_metric": "val_recon", "epochs": 3})
    with caplog.at_level("INFO", logger="aecli"):
        assert job.train_one(cfg, run, []) == 280.0
    assert "was pruned by its search: continuing it" in caplog.text
    assert rundir.read_status(run)["status"] == "ok"


def test_resume_auto_extends_a_finished_run_when_epochs_grew(tmp_path, data_root, capsys):
    """One rule for resume=auto, said in the output: a finished run is extended when epochs= grew (it said "ended
    ok before: kept" and exited 0 without training), and kept when it did not."""
    over = [*tiny_overrides(data_root, **{"data.limit": 256, "data.val_size": 128}),
            f"hydra.run.dir={tmp_path / 'run'}"]
    main(["train", *over])
    main(["train", *over, "epochs=2", "resume=auto"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "extending it to epochs=2" in log
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path / "run")] == ["1", "2"]
    main(["train", *over, "epochs=2", "resume=auto"])
    assert "ended ok before: kept (val_recon" in (tmp_path / "run" / "train.log").read_text()
    assert "2 of epochs=2 trained" in (tmp_path / "run" / "train.log").read_text()
    assert len(rundir.read_metrics(tmp_path / "run")) == 2


@pytest.mark.slow
def test_a_signal_during_the_final_evaluation_says_how_to_finish_it(tmp_path, data_root):
    """Training ended, the evaluation is running: SIGTERM writes status.json (interrupted, stage evaluation) and
    prints the `aecli eval` command that completes it."""
    over = [*tiny_overrides(data_root, **{"eval.at_end": "true", "eval.iw_samples": 100000, "eval.iw_images": 500}),
            "hydra.run.dir=run"]
    proc = subprocess.Popen([sys.executable, "-m", "aecli.cli", "train", *over], cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if line.startswith("done: best val_loss"):
            time.sleep(1.0)  # into the evaluation (the IW bound alone takes minutes at these sizes)
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.count("\n") == 1, err
    assert "during the evaluation: training finished" in err and "aecli eval run=" in err
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["stage"] == "evaluation"
    assert not (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_a_resume_keeps_the_run_s_own_eval_setting(data_root, fast_data, tmp_path):
    """A run started with eval.at_end=false and resumed is not evaluated (the resumes read the new composed config
    before: 8 of 8 evaluated)."""
    from aecli.job import run_training

    cfg = compose_tiny(data_root)  # eval.at_end=false in tiny_overrides
    first = Trainer(cfg, tmp_path / "run", stop_at_step=3)
    with pytest.raises(Interrupted):
        first.fit()
    run_training(compose_tiny(data_root, resume=tmp_path / "run", **{"eval.at_end": "true"}), tmp_path / "run",
                 overrides=[f"resume={tmp_path / 'run'}"])  # the composed default says true; the run said false
    assert not (tmp_path / "run" / "eval.json").exists()
