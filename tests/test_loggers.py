"""Trackers (aecli/loggers.py): MLflow and W&B run for real, offline, and what they wrote is read back with their
own client (MLflow) or from the offline run files (W&B); resume continues the same tracker run; a tracker that
fails warns once and training goes on; `logger=[...]` composes several loggers behind one set of hooks."""

from __future__ import annotations

import csv
import logging
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from aecli.paths import config_dir
from aecli.errors import AecliError
from aecli.loggers import Loggers, chosen, logger_classes, make_logger
from conftest import REPO, components, tiny_overrides

mlflow = pytest.importorskip("mlflow")  # the dev group installs both extras
wandb = pytest.importorskip("wandb")
CONF = config_dir()


def compose_with(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Each test in its own folder (MLflow's default store, mlflow.db, lands there), W&B with no login and its
    settings and caches in tmp_path, so nothing here reads or writes the user's own."""
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    yield
    HydraConfig.instance().cfg = None


def train(cfg, run_dir: Path):
    """One run in-process, as `aecli train` runs it."""
    from aecli.job import run_training

    return run_training(cfg, run_dir)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wandb_records(run_dir: Path):
    """Every record of the run folder's offline W&B runs, oldest run first. A .wandb file is LevelDB's log
    format: a 7-byte header (":W&B", 0xBEE1, version), then 32 KiB blocks of chunks, each with a 7-byte header
    (CRC32C, length, type: 1 full, 2 first, 3 middle, 4 last) holding serialized Record protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, block, chunk = path.read_bytes(), 7, 32768, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a header is padding
                pos += block - pos % block
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0:
                pos += block - pos % block
                continue
            chunk += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(chunk)
                chunk = b""
                yield record


def wandb_values(items) -> dict[str, str]:
    return {item.key or "/".join(item.nested_key): item.value_json for item in items}


def wandb_history(run_dir: Path, key: str) -> list[tuple[float, float]]:
    """(epoch or step, value) of a logged key, in the order logged."""
    axis = "step" if key.startswith("step/") else "epoch"
    rows = [wandb_values(r.history.item) for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "history"]
    return [(float(h[axis]), float(h[key])) for h in rows if key in h]


def only_run(client) -> object:
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


# -- both trackers on a real training run -------------------------------------------------------------
@pytest.mark.slow
def test_trackers_record_a_training_run(tmp_path, data_root, caplog):
    from mlflow import MlflowClient


    run = tmp_path / "run"
    cfg = compose_with(*tiny_overrides(data_root, epochs=2, **{"trainer.log_every": 1}),
                       "logger=[csv,tensorboard,mlflow,wandb]")
    with caplog.at_level(logging.WARNING, logger="aecli"):
        outcome = train(cfg, run)
    assert not [r for r in caplog.records if r.name == "aecli" and "logger=" in r.getMessage()]
    rows = read_csv(run / "metrics.csv")
    val_loss = [float(r["val_loss"]) for r in rows]
    assert list(run.glob("events.out.tfevents.*"))  # TensorBoard beside the two trackers

    # MLflow: the default store is MLflow's own, mlflow.db in the current folder
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient()
    got = only_run(client)
    run_id = got.info.run_id
    assert got.info.status == "FINISHED" and got.info.run_name == str(run)
    assert got.data.params["lr"] == str(cfg.lr) and got.data.params["net.hidden"] == "[64, 32]"
    assert got.data.params["data.limit"] == "512" and "model._target_" in got.data.params
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "epoch/val_loss"))
    assert [s for s, _ in history] == [1, 2] and [v for _, v in history] == pytest.approx(val_loss)
    steps = client.get_metric_history(run_id, "step/train_loss")
    assert sorted(m.step for m in steps) == list(range(1, 9))  # 4 steps an epoch, log_every=1
    assert got.data.metrics["final/best_val_loss"] == pytest.approx(min(val_loss))
    artifacts = {a.path for folder in ("images", "plots", "checkpoints") for a in client.list_artifacts(run_id, folder)}
    assert {"images/recon_epoch_002.png", "images/samples_epoch_002.png", "plots/loss.png",
            "checkpoints/best.pt"} <= artifacts
    copied = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path / "dl")))
    assert copied.read_bytes() == (run / "checkpoints" / "best.pt").read_bytes()

    # W&B: offline (no login, no WANDB_MODE), its files under the run folder's wandb/
    records = list(wandb_records(run))
    started = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(started) == 1 and started[0].project == "aecli" and started[0].display_name == str(run)
    config = wandb_values(started[0].config.update)
    assert float(config["lr"]) == cfg.lr and config["latent_dim"] == "4" and "model" in config
    history = wandb_history(run, "epoch/val_loss")
    assert [s for s, _ in history] == [1, 2] and [v for _, v in history] == pytest.approx(val_loss)
    assert [s for s, _ in wandb_history(run, "step/train_loss")] == list(range(1, 9))
    images = [wandb_values(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert sum("images/recon/path" in h for h in images) == 2  # a grid per epoch
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(wandb_values(r.summary.update))
    assert float(summary["final/best_val_loss"]) == pytest.approx(min(val_loss))
    assert outcome.value is not None


# -- resume -------------------------------------------------------------------------------------------
def test_resume_continues_the_same_tracker_runs(tmp_path):
    from mlflow import MlflowClient

    cfg = compose_with("logger=[csv,mlflow,wandb]")
    run = tmp_path / "run"
    first = make_logger(cfg, run)
    first.log_epoch(1, {"epoch": 1, "step": 4, "val_loss": 2.0, "collapse": ""})
    state = first.state_dict()
    assert set(state) == {"mlflow", "wandb"} and state["mlflow"]["run_id"] and state["wandb"]["id"]
    torch.save({"logger": state}, tmp_path / "ckpt.pt")  # the state rides in the checkpoint
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["logger"]
    first.trackers["wandb"].run.finish()  # the first process ended (interrupted: no close)
    time.sleep(1.01 - time.time() % 1)  # W&B names an offline run's folder by the second it started

    second = make_logger(compose_with("logger=[csv,mlflow,wandb]", "epochs=20"), run)  # resumed to train longer
    second.load_state_dict(state)
    second.log_epoch(2, {"epoch": 2, "step": 8, "val_loss": 1.0})
    second.close({"best_val_loss": 1.0})
    assert second.state_dict() == state

    client = MlflowClient()
    got = only_run(client)  # no second run
    assert got.info.run_id == state["mlflow"]["run_id"] and got.info.status == "FINISHED"
    assert got.data.params["epochs"] == str(cfg.epochs) and got.data.tags["aecli.resumed_with"] == "epochs=20"
    history = client.get_metric_history(got.info.run_id, "epoch/val_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]

    ids = {r.run.run_id for r in wandb_records(run) if r.WhichOneof("record_type") == "run"}
    assert ids == {state["wandb"]["id"]}  # two offline pieces of one run: `wandb sync` joins them
    assert len(list(run.glob("wandb/offline-run-*"))) == 2
    assert wandb_history(run, "epoch/val_loss") == [(1, 2.0), (2, 1.0)]


def test_resume_into_another_store_starts_a_new_run_and_says_so(tmp_path, caplog):
    cfg = compose_with("logger=mlflow")
    logger = make_logger(cfg, tmp_path / "run")
    logger.load_state_dict({"mlflow": {"run_id": "0123456789abcdef0123456789abcdef"}})
    with caplog.at_level(logging.WARNING, logger="aecli"):
        logger.log_epoch(3, {"val_loss": 1.0})
    assert "is not in" in caplog.text and "new MLflow run" in caplog.text
    assert logger.state_dict()["mlflow"]["run_id"] != "0123456789abcdef0123456789abcdef"


# -- failures -----------------------------------------------------------------------------------------
def test_bad_tracking_uri_warns_once_and_training_goes_on(tmp_path, data_root, caplog):

    (tmp_path / "a-file").write_text("not a folder")
    cfg = compose_with(*tiny_overrides(data_root, epochs=2, **{"trainer.log_every": 1}), "logger=[csv,mlflow]",
                       f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/a-file/mlflow.db")
    with caplog.at_level(logging.WARNING, logger="aecli"):
        outcome = train(cfg, tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records if "logger=mlflow" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0] and "training goes on" in warned[0], warned
    assert len(read_csv(tmp_path / "run" / "metrics.csv")) == 2 and outcome.value is not None
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_a_tracker_failing_mid_run_is_dropped_and_the_others_go_on(tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []

    def full_disk(self, run_id, metrics=(), params=(), tags=()):
        calls.append(run_id)
        if metrics:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_batch", full_disk)
    logger = make_logger(compose_with("logger=[csv,tensorboard,mlflow]"), tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="aecli"):
        for epoch in (1, 2, 3):
            logger.log_epoch(epoch, {"epoch": epoch, "val_loss": 1.0 / epoch})
        logger.close({"best_val_loss": 1 / 3})
    warned = [r.getMessage() for r in caplog.records if r.name == "aecli"]
    assert warned == [warned[0]] and "logger=mlflow failed (log_epoch: OSError: [Errno 28] No space left" in warned[0]
    assert "mlflow" in logger.state_dict()  # kept for a later resume
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [1, 2, 3]


def test_missing_library_names_the_extra(tmp_path, monkeypatch):
    for name in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
        with pytest.raises(AecliError, match=rf"logger={name} needs .*pip install 'aecli\[{name}\]'"):
            make_logger(compose_with(f"logger=[csv,{name}]"), tmp_path)


def test_trackers_are_imported_only_when_chosen():
    code = ("import sys, aecli.loggers, aecli.sweep, aecli.report; "
            "print(sorted(m for m in ('mlflow', 'wandb', 'torch', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


# -- composing several ------------------------------------------------------------------------------
def test_every_logger_has_its_yaml():
    assert components("logger") == sorted(logger_classes())


def test_list_syntax_composes_one_fan_out(tmp_path):
    cfg = compose_with("logger=[csv,tensorboard,mlflow]", "logger.tensorboard.flush_secs=5")
    assert set(cfg.logger) == {"csv", "tensorboard", "mlflow"} and cfg.logger.tensorboard.flush_secs == 5
    logger = make_logger(cfg, tmp_path / "run")
    assert isinstance(logger, Loggers) and list(logger.trackers) == ["tensorboard", "mlflow"]
    logger.close({})
    assert list(make_logger(compose_with("logger=mlflow"), tmp_path / "b").trackers) == ["mlflow"]
    assert make_logger(compose_with(), tmp_path / "c").trackers == {}  # csv: the trainer's metrics.csv only
    assert make_logger(compose_with(), tmp_path / "c").state_dict() == {}


def test_a_checkpoint_from_before_the_list_layout_still_reads():
    old = OmegaConf.create({"logger": {"name": "tensorboard", "flush_secs": 30}})
    assert chosen(old) == {"tensorboard": {"flush_secs": 30}}
    with pytest.raises(AecliError, match="logger=comet is not a logger aecli knows: allowed csv, mlflow"):
        make_logger(OmegaConf.create({"logger": {"name": "comet"}}), Path("."))


def test_a_sweep_groups_its_jobs(tmp_path):
    """In a multirun (Hydra's config set as in a job), the jobs share an MLflow experiment and a W&B group."""
    from mlflow import MlflowClient

    sweep = tmp_path / "sweep"
    for job in (0, 1):
        cfg = compose_with("logger=[mlflow,wandb]", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep}",
                           f"hydra.job.num={job}", hydra=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # a job's own config has no hydra node
        logger = make_logger(cfg, sweep / str(job))
        logger.log_epoch(1, {"val_loss": float(job)})
        logger.close({})
    client = MlflowClient()
    experiment = client.get_experiment_by_name(f"aecli sweep {sweep}")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["aecli.job"] for r in runs) == ["0", "1"]
    for job in (0, 1):
        started = [r.run for r in wandb_records(sweep / str(job)) if r.WhichOneof("record_type") == "run"]
        assert [s.run_group for s in started] == [str(sweep)]


def test_an_interrupted_run_resumed_by_the_trainer_keeps_one_mlflow_run(tmp_path, data_root):
    """The trainer stores the loggers' state in every checkpoint and hands it back on resume: a run stopped
    mid-epoch (SIGTERM) and resumed is one MLflow run with every epoch, not two."""
    from mlflow import MlflowClient

    from aecli.signals import Interrupted
    from aecli.loop import Trainer

    over = [*tiny_overrides(data_root, epochs=2, **{"data.limit": 256, "batch_size": 64}), "logger=[csv,mlflow]"]
    first = Trainer(compose_with(*over), tmp_path / "run", stop_at_step=6)
    with pytest.raises(Interrupted):
        first.fit()
    cfg = compose_with(*over, f"resume={tmp_path / 'run'}")
    second = Trainer.resume(cfg, tmp_path / "run", [f"resume={tmp_path / 'run'}"])
    second.fit()
    second.logger.close({"best_val_loss": second.state.best_val})
    got = only_run(MlflowClient())
    history = MlflowClient().get_metric_history(got.info.run_id, "epoch/val_loss")
    assert sorted(m.step for m in history) == [1, 2]
