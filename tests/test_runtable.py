"""The run table (aecli/runtable.py): the rows read from run folders, their order, and the table `aecli runs` and
a sweep print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aecli import rundir, runtable
from aecli.errors import AecliError


def make_run(folder: Path, overrides: list[str], val: list[float], status: str = "ok", data: str = "mnist",
             evaluation: dict | None = None) -> Path:
    """A run folder as a finished run leaves it: .hydra/ (overrides, the data set chosen), metrics.csv, status.json."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"data": data}}}}),
                   folder / ".hydra" / "hydra.yaml")
    rundir.write_metrics(folder, [{"epoch": i + 1, "val_loss": v + 1, "val_recon": v} for i, v in enumerate(val)])
    rundir.write_status(folder, status, 1.0, optimized={"val_recon": min(val)})
    if evaluation is not None:
        (folder / "eval.json").write_text(json.dumps(evaluation))
    return folder


def test_summary_reads_eval_json_and_status(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,val_loss,val_recon\n1,5.0,4.0\n2,3.0,2.5\n3,nan,nan\n4,3.5,1.0\n")
    (run / "eval.json").write_text(json.dumps({"test_bce": 80.5, "probe": {"accuracy": 0.9}, "model": "cae"}))
    row = runtable.summarize(run, "a")
    assert (row["val_loss"], row["val_recon"], row["epoch"]) == (3.0, 2.5, 2)  # the best epoch, NaN skipped
    assert row["test_bce"] == 80.5 and row["test_probe.accuracy"] == 0.9 and "test_model" not in row
    assert row["status"] == "unknown"  # no status.json: still running, or killed
    rundir.write_status(run, "ok", 12.3456)
    assert runtable.summarize(run, "a")["status"] == "ok" and runtable.summarize(run, "a")["seconds"] == 12.346


def test_the_table_is_compact_and_fits_the_terminal(capsys, monkeypatch):
    """The run, what varies, the status, the optimized metric and headline test numbers; what every run shares
    once below; never wider than the terminal (or 100 columns in a pipe); errors one line each; columns= chooses."""
    rows = [{"run": str(i), "overrides": f"data.root=/d lambda={i} lr=0.0012520653814999472", "val_loss": 1.0 + i,
             "test_recon_bce": 80.0 + i, "test_pixel_probe_acc": 0.9, "test_probe_acc": 0.8, "seconds": 1.0,
             "status": "ok" if i < 3 else "failed", "error": "lambda=-1 is not allowed: " + "x" * 300,
             "optimized": 70.0 + i, "optimized_metric": "val_recon"} for i in (1, 2, 3)]
    rows[0]["error"] = rows[1]["error"] = None
    for width in (60, 100, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        runtable.print_table(rows, "t")
        out = capsys.readouterr().out
        assert max(len(line) for line in out.splitlines()) <= width, out
        header = next(line for line in out.splitlines() if "run" in line and "status" in line)
        assert "val_recon" in header and "lambda=" not in header
        assert "every run: data.root=/d lr=0.001252" in out  # shared overrides once, long numbers shortened
        assert sum("3 failed: lambda=-1" in line for line in out.splitlines()) == 1  # one line, cut to the width
    assert "recon_bce" in header and "probe_acc" in header and "pixel" not in header  # at 200 columns
    runtable.print_table(rows, "t", ["run", "test_pixel_probe_acc"])
    assert "pixel_probe_acc" in capsys.readouterr().out
    with pytest.raises(AecliError, match="columns=nope is not a column"):
        runtable.print_table(rows, "t", ["nope"])


def test_list_valued_overrides_show_whole(tmp_path, capsys, monkeypatch):
    """'logger=[mlflow,wandb]' is shown as written, in the rows, the varying column and the "every run:" line (rich
    took [mlflow,wandb] for markup and printed `logger=`)."""
    monkeypatch.setenv("COLUMNS", "120")
    make_run(tmp_path / "a", ["logger=[mlflow,wandb]", "net.hidden=[64,32]", "lr=0.1"], [5.0])
    make_run(tmp_path / "b", ["logger=[mlflow,wandb]", "net.hidden=[16]", "lr=0.1"], [4.0])
    runtable.runs_command([str(tmp_path)])
    out = capsys.readouterr().out
    assert "every run: logger=[mlflow,wandb] lr=0.1" in out
    assert "net.hidden=[64,32]" in out and "net.hidden=[16]" in out


def test_sort_shows_the_column_it_sorts_by(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    for i, acc in enumerate((0.7, 0.9, 0.8)):
        make_run(tmp_path / str(i), [f"lambda={i}"], [5.0 - i], evaluation={"probe_acc": acc, "recon_bce": 90.0,
                                                                           "knn_acc": 0.5, "frechet": 3.0})
    rows = runtable.runs_command([str(tmp_path)], sort="-test_probe_acc")
    assert [r["run"] for r in rows] == ["1", "2", "0"]
    header = next(line for line in capsys.readouterr().out.splitlines() if "run" in line and "status" in line)
    assert "probe_acc" in header


def test_run_folders_are_never_broken_mid_name_at_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    names = ["lambda_search_cae/2026-12-06/20-18-49-123456/10", "2026-12-07/09-01-02-654321"]
    for i, name in enumerate(names):
        make_run(tmp_path / name, [f"lambda={i}", ["model=vae", "model=ae"][i], f"lr=0.00{i + 1}",
                                   f"latent_dim={16 * (i + 1)}", ["net.hidden=[512,256]", "net.hidden=[64]"][i],
                                   f"model.kl_warmup_epochs={5 * i}"],
                 [5.0 - i],
                 evaluation={"recon_bce": 90.0 + i, "probe_acc": 0.8, "knn_acc": 0.7, "iw_bound": -95.0})
    runtable.runs_command([str(tmp_path)])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for part in "/".join(names).split("/"):
        assert part in out, out  # broken after a /, never inside a name


def test_runs_of_different_data_sets_are_ranked_within_each(tmp_path, capsys, monkeypatch):
    """val_recon on MNIST and on Fashion-MNIST are not comparable: each data set's runs are ranked among
    themselves, the data set is a column, and the table says so."""
    monkeypatch.setenv("COLUMNS", "120")
    make_run(tmp_path / "0", ["data=mnist", "lambda=1"], [90.0])
    make_run(tmp_path / "1", ["data=fashion_mnist", "lambda=1"], [240.0], data="fashion_mnist")
    make_run(tmp_path / "2", ["data=mnist", "lambda=2"], [80.0])
    make_run(tmp_path / "3", ["data=fashion_mnist", "lambda=2"], [230.0], data="fashion_mnist")
    rows = runtable.runs_command([str(tmp_path)])
    assert [(r["data"], r["run"]) for r in rows] == [("mnist", "2"), ("mnist", "0"), ("fashion_mnist", "3"),
                                                     ("fashion_mnist", "1")]
    out = capsys.readouterr().out
    assert "not comparable across data sets" in out and "fashion_mnist" in out


def test_a_pruned_run_is_shown_and_not_counted_as_failed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    make_run(tmp_path / "0", ["lr=0.1"], [90.0])
    make_run(tmp_path / "1", ["lr=10"], [300.0], status="pruned")
    rows = runtable.runs_command([str(tmp_path)])
    assert runtable.failed(rows) == 0 and [r["status"] for r in rows] == ["ok", "pruned"]
    out = capsys.readouterr().out
    assert "1 pruned" in out and "not ok" not in out and "pruned" in out.split("2 runs")[1]


def test_the_table_names_the_metrics_eval_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    make_run(tmp_path / "0", ["lr=0.1"], [90.0], data="images",
             evaluation={"recon_bce": 80.0, "skipped": {"probe_acc": "the data set faces has no labels"}})
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("data:\n  path: /faces\n")
    rows = runtable.collect([tmp_path])
    assert rows[0]["data"] == "images:/faces"
    runtable.print_table(rows, "t")
    assert "skipped by eval: probe_acc (the data set faces has no labels) in 1 run" in capsys.readouterr().out


def test_whole_numbers_print_whole():
    assert runtable.cell("test_iw_images", 10000.0) == "10000" and runtable.cell("val_recon", 123.456) == "123.5"
