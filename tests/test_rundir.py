"""The run folder (aecli/rundir.py): what a run folder is, its status, metrics and evaluation, a sweep's attempts,
and the lock that gives a folder to one process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aecli import rundir
from aecli.rundir import RunDir
from conftest import run_cli, tiny_overrides


def test_the_layout_is_named_once():
    run = RunDir("/r")
    assert (str(run.status), str(run.metrics), str(run.eval)) == ("/r/status.json", "/r/metrics.csv", "/r/eval.json")
    assert (str(run.last), str(run.best), str(run.checkpoint("best"))) == (
        "/r/checkpoints/last.pt", "/r/checkpoints/best.pt", "/r/checkpoints/best.pt")
    assert (str(run.images), str(run.plots), str(run.hydra)) == ("/r/images", "/r/plots", "/r/.hydra")


def test_a_run_folder_and_a_run_that_trained(tmp_path):
    """is_run: a run was started there (listed by `aecli runs`); holds_a_run: it trained (never overwritten)."""
    run = tmp_path / "run"
    assert not rundir.is_run(run) and not rundir.holds_a_run(run)
    (run / ".hydra").mkdir(parents=True)
    assert rundir.is_run(run) and not rundir.holds_a_run(run)
    rundir.write_status(run, "failed", 1.0, "lambda=-1 is not allowed")
    assert not rundir.holds_a_run(run)  # failed before its first epoch: reused
    rundir.write_metrics(run, [{"epoch": 1, "val_loss": 3.0}, {"epoch": 2, "val_loss": 2.0, "val_kl": 0.5}])
    assert rundir.holds_a_run(run)
    assert rundir.read_metrics(run)[1] == {"epoch": "2", "val_loss": "2.0", "val_kl": "0.5"}  # every column kept
    assert rundir.curve(run, "val_loss") == [(1.0, 3.0), (2.0, 2.0)]
    assert rundir.find_runs(tmp_path) == [run]


def test_status_is_written_and_read_back(tmp_path):
    rundir.write_status(tmp_path, "pruned", 12.3456, "pruned after epoch 2", optimized={"val_recon": 90.0})
    status = rundir.read_status(tmp_path)
    assert status["status"] == "pruned" and status["seconds"] == 12.346 and status["optimized"] == {"val_recon": 90.0}
    (tmp_path / "status.json").write_text("{broken")
    assert rundir.read_status(tmp_path) == {}


def test_a_sweep_s_attempts(tmp_path):
    rundir.note_failed_attempt(tmp_path, 3, "boom")
    assert rundir.attempt_failures(tmp_path) == {"3": {"status": "failed", "error": "boom"}}
    rundir.new_attempt(tmp_path)
    assert rundir.attempt_failures(tmp_path) == {}


def test_the_lock_is_a_filelock_naming_its_owner(tmp_path):
    """Another process is refused with the owner's pid; when the owner dies the OS releases the lock."""
    folder = tmp_path / "f"
    code = ("import sys; from aecli import rundir\n"
            "try:\n    rundir.lock_folder(sys.argv[1])\nexcept rundir.FolderInUse as e:\n    print(e); sys.exit(2)")
    rundir.lock_folder(folder)
    other = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert other.returncode == 2 and f"(pid {os.getpid()})" in other.stdout
    rundir.unlock_folder(folder)
    assert subprocess.run([sys.executable, "-c", code, str(folder)]).returncode == 0


@pytest.mark.slow
def test_a_run_folder_is_owned_by_one_process(tmp_path, data_root):
    """A second `aecli train` (or a resume) pointed at a folder another process is using gets one line naming it;
    the lock is the OS's, so a process that dies leaves nothing stuck."""
    folder = tmp_path / "run"
    rundir.lock_folder(folder)  # this test's process owns it, as a running run would
    try:
        proc = run_cli("train", *tiny_overrides(data_root), f"hydra.run.dir={folder}", cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"is in use by another aecli process (pid {os.getpid()})" in proc.stderr
        assert not (folder / ".hydra").exists()  # refused before Hydra wrote anything
    finally:
        rundir.unlock_folder(folder)  # released: the next run takes it
    proc = run_cli("train", *tiny_overrides(data_root), f"hydra.run.dir={folder}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def imports_of(module: str) -> set[str]:
    """The aecli modules `module` imports, at its top or inside a function."""
    import ast

    from conftest import REPO

    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aecli"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("aecli")}
    return found


def test_the_run_folder_is_the_floor_and_its_views_import_downward():
    """rundir imports nothing of aecli but the errors; the run table reads it; the report reads the table; the sweep
    callback imports the report (report.py and sweep.py imported each other)."""
    assert {m for m in imports_of("aecli.rundir") if m != "aecli.errors.AecliError"} == {"aecli.errors"}
    assert not {"aecli.report", "aecli.sweep", "aecli.job"} & imports_of("aecli.runtable")
    assert not {"aecli.sweep", "aecli.job"} & imports_of("aecli.report")
    assert "aecli.report" in imports_of("aecli.sweep") and "aecli.sweep" not in imports_of("aecli.runtable")


def test_a_lock_held_by_another_process_is_seen(tmp_path):
    import subprocess
    import sys
    import time

    path = tmp_path / "w.lock"
    assert rundir.take_lock(path) is None and not rundir.lock_is_held(path)  # no such file
    path.touch()
    assert not rundir.lock_is_held(path)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert rundir.lock_is_held(path) and rundir.take_lock(path) is None
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    lock = rundir.take_lock(path)
    assert lock is not None
    lock.release()
