"""Where a run's numbers go besides metrics.csv (which the trainer always writes): `logger=` in conf/logger/.

    logger=csv          metrics.csv only (the default)
    logger=tensorboard  TensorBoard event files in the run folder. `tensorboard --logdir outputs/`
    logger=mlflow       an MLflow run in a local store (MLflow's default: mlflow.db in the current folder),
                        with the config as params and the run folder's PNGs and best.pt as artifacts. `mlflow ui`
    logger=wandb        a Weights & Biases run, offline (in the run folder's wandb/, for `wandb sync`) unless
                        you are logged in or WANDB_MODE says otherwise
    logger=[csv,tensorboard,mlflow]   several at once: each option's yaml lands under `logger.<name>`

Every tracker gets the same numbers under the same names: the running train terms every `trainer.log_every`
steps (step/train_*), every numeric metrics.csv column per epoch (epoch/*), the reconstruction and sample grids
per epoch (images/*; MLflow takes the PNG files at the end instead), and at the end the final numbers (final/*:
the best val_loss and the test metrics when eval ran) beside the hyperparameters.

A tracker is a side channel: one that fails (a bad URI, a full disk, a server that went away) says so in one
warning line and is dropped for the rest of the run, and training goes on. Only a tracker library that is not
installed stops the run, at once, with the extra to install. The trackers' libraries are imported when chosen,
never when this module is: `aecli runs` and a csv-only run do not pay for them.

The trainer calls the hooks with numbers it has already read from the device: a logger adds no host sync.
A resumed run continues the same tracker runs: the trainer stores `state_dict()` in its checkpoints and hands
it to `load_state_dict()` before the first hook, and the trackers start their runs at the first hook.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aecli import schema
from aecli.errors import AecliError
from aecli.rundir import CHECKPOINTS, RunDir

log = logging.getLogger("aecli")


class Logger:
    """The hooks a tracker implements (each a no-op here). A tracker named in conf/logger/<name>.yaml by its
    `_target_` is built as `cls(run_dir, cfg, sweep, options)`: the run folder, the run's config, the sweep it runs
    in (`hydra_sweep()`) and its checked `Options`."""

    name: str | None = None  # its option of conf/logger/

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        """Running means of the training terms at optimizer step `step`."""

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """The epoch's metrics.csv row."""

    def log_images(self, epoch: int, grids: dict[str, Any]) -> None:
        """Image batches [N, 1, 28, 28] in [0, 1] by name (recon, samples)."""

    def close(self, metrics: dict[str, float]) -> None:
        """The run ended; `metrics`: its final numbers (best val_loss, the test metrics when eval ran)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this logger's run (plain containers, for the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run `state` (from `state_dict()` of the run being resumed) instead of starting one."""


@dataclass(kw_only=True)
class NoOptions(schema.Options):
    """A tracker without options."""


class CsvLogger(Logger):
    """logger=csv: the trainer writes metrics.csv itself, so every hook is a no-op."""

    name = "csv"
    Options = NoOptions

    def __init__(self, run_dir: Path, cfg: DictConfig, sweep: dict[str, str] | None, options: NoOptions):
        pass


# -- the names every tracker uses ---------------------------------------------------------------------
def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def step_scalars(terms: dict[str, float]) -> dict[str, float]:
    return {f"step/train_{k}": float(v) for k, v in terms.items() if _number(v)}


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric columns of a metrics.csv row (not the epoch and step counters, not the collapse text)."""
    return {f"epoch/{k}": float(v) for k, v in row.items() if k not in ("epoch", "step") and _number(v)}


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {f"final/{k}": float(v) for k, v in flatten(metrics).items() if _number(v)}


def image_grid(images):
    """A batch [N, 1, 28, 28] as one [1, H, W] grid in [0, 1], eight images a row (the PNGs' layout)."""
    from aecli.plots import make_grid

    return make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=8)


def one_line(error: BaseException, limit: int = 200) -> str:
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
    text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def missing(name: str, library: str) -> AecliError:
    return AecliError(f"logger={name} needs {library}, which is not installed: pip install 'aecli[{name}]' "
                      f"(or uv sync --extra {name}), or leave {name} out of logger=")


# -- TensorBoard --------------------------------------------------------------------------------------
class TensorBoardLogger(Logger):
    """Event files in the run folder: scalars, image grids, and the HPARAMS tab (hyperparameters, final metrics)."""

    name = "tensorboard"

    @dataclass(kw_only=True)
    class Options(schema.Options):
        flush_secs: float = schema.number(30, low=0, low_open=True)  # seconds between writes of the event file

    def __init__(self, run_dir: Path, cfg: DictConfig, sweep: dict[str, str] | None, options: Options):
        try:  # torch.utils.tensorboard needs the tensorboard package: an optional extra
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise missing("tensorboard", "TensorBoard") from None
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=options.flush_secs)
        self.hparams = flat_hparams(cfg)

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        for k, v in step_scalars(terms).items():
            self.writer.add_scalar(k, v, step)

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        for k, v in epoch_scalars(row).items():
            self.writer.add_scalar(k, v, epoch)

    def log_images(self, epoch: int, grids: dict[str, Any]) -> None:
        for name, images in grids.items():
            self.writer.add_image(f"images/{name}", image_grid(images), epoch)

    def close(self, metrics: dict[str, float]) -> None:
        """Hyperparameters with the final metrics, in this run's own event file (HPARAMS tab)."""
        from torch.utils.tensorboard.summary import hparams

        final = final_scalars(metrics)
        for summary in hparams(self.hparams, final):
            self.writer.file_writer.add_summary(summary)
        for k, v in final.items():
            self.writer.add_scalar(k, v)
        self.writer.close()


# -- MLflow -------------------------------------------------------------------------------------------
class MLflowLogger(Logger):
    """One MLflow run per aecli run, through MLflow's own client (no fluent global state): params = the resolved
    config flattened, metrics by step and epoch, the final numbers, and at the end the run folder's PNGs
    (images/, plots/) and checkpoints/best.pt as artifacts. A sweep's jobs share one experiment, named after
    the sweep folder; a single run goes to `experiment`."""

    name = "mlflow"

    @dataclass(kw_only=True)
    class Options(schema.Options):
        tracking_uri: str | None = schema.text(None, optional=True)  # null: MLflow's default store
        experiment: str = schema.text("aecli")  # the experiment of a single run
        artifacts: bool = schema.boolean(True)  # the run folder's PNGs and best.pt as artifacts at the end
        http_retries: int = schema.integer(2, low=0)  # retries of a request to an http(s) tracking server
        http_timeout: float = schema.number(30, low=0, low_open=True)  # seconds before a request times out

    def __init__(self, run_dir: Path, cfg: DictConfig, sweep: dict[str, str] | None, options: Options):
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise missing("mlflow", "MLflow") from None
        # MLflow's own HTTP defaults (7 retries with backoff, 120 s timeout) stall a run for minutes on a server
        # that is down, before the tracker can be dropped; these are read at each request
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(options.http_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(options.http_timeout)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # a line per retry: ours says it once
        self.client = MlflowClient(tracking_uri=options.tracking_uri)  # None: MLflow's default store
        self.run_dir, self.params, self.artifacts = Path(run_dir), flat_hparams(cfg), options.artifacts
        experiment = options.experiment
        self.experiment = f"{experiment} sweep {sweep['dir']}" if sweep else experiment
        self.tags = {"aecli.run_dir": str(run_dir), **({"aecli.sweep": sweep["dir"], "aecli.job": sweep["job"]}
                                                       if sweep else {})}
        self.run_id: str | None = None  # the run to continue (load_state_dict) or the one started
        self.started = False

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or self.run_id

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def experiment_id(self) -> str:
        """This run's experiment, created on first use; parallel jobs of a sweep may race to create it."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # another job created it first
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def start(self) -> str:
        """The MLflow run: the one `load_state_dict` named, reopened, when the store has it, else a new one."""
        if not self.started:
            from mlflow.entities import Param

            params = {k: str(v)[:6000] for k, v in self.params.items()}
            if self.run_id:
                params = self.reopen(params)
            if not self.run_id:
                self.run_id = self.client.create_run(self.experiment_id(), run_name=str(self.run_dir),
                                                     tags=self.tags).info.run_id
            self.started = True
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=items[i:i + 100])
        return self.run_id

    def reopen(self, params: dict[str, str]) -> dict[str, str]:
        """Mark run `run_id` running again and return the params it lacks. A logged param never changes in MLflow:
        the ones this resume changed (epochs=N, resume=...) go into the tag aecli.resumed_with. A run this store
        does not have (another tracking_uri) is said in one line and forgotten: a new run starts."""
        from mlflow.entities import RunStatus
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(self.run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # the store failed: not a reason to start a duplicate
                raise
            log.warning(f"logger=mlflow: run {self.run_id} is not in {self.client.tracking_uri}: "
                        f"this resumed run logs to a new MLflow run")
            self.run_id = None
            return params
        self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        logged = run.data.params
        changed = " ".join(f"{k}={v}" for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            self.client.set_tag(self.run_id, "aecli.resumed_with", changed[:5000])
        return {k: v for k, v in params.items() if k not in logged}

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if scalars:
            now = int(time.time() * 1000)
            run_id = self.start()
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        self.log_scalars(step_scalars(terms), step)

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        self.log_scalars(epoch_scalars(row), epoch)

    def close(self, metrics: dict[str, float]) -> None:
        run_id = self.start()
        self.log_scalars(final_scalars(metrics), 0)
        if self.artifacts:
            run = RunDir(self.run_dir)
            for folder in (run.images, run.plots):
                for png in sorted(folder.glob("*.png")):
                    self.client.log_artifact(run_id, str(png), folder.name)
            if run.best.is_file():
                self.client.log_artifact(run_id, str(run.best), CHECKPOINTS)
        self.client.set_terminated(run_id)


# -- Weights & Biases ---------------------------------------------------------------------------------
class WandbLogger(Logger):
    """One W&B run per aecli run, its files in the run folder's wandb/. Offline unless `mode` or WANDB_MODE says
    otherwise or you are logged in (`wandb login`): `wandb sync RUN/wandb/offline-run-*` uploads an offline run
    later. A sweep's jobs share a group, the sweep folder."""

    name = "wandb"

    @dataclass(kw_only=True)
    class Options(schema.Options):
        project: str = schema.text("aecli")
        entity: str | None = schema.text(None, optional=True)  # your W&B user or team (null: your default)
        mode: str | None = schema.text(None, optional=True)  # null: $WANDB_MODE, else online when logged in

    def __init__(self, run_dir: Path, cfg: DictConfig, sweep: dict[str, str] | None, options: Options):
        try:
            import wandb
        except ImportError:
            raise missing("wandb", "Weights & Biases (wandb)") from None
        from aecli.config import plain

        self.wandb, self.run_dir, self.config = wandb, Path(run_dir), plain(cfg)
        self.project, self.entity, self.mode, self.sweep = options.project, options.entity, options.mode, sweep
        self.run_id: str | None = None
        self.run = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("id") or self.run_id

    def state_dict(self) -> dict[str, Any]:
        return {"id": self.run_id} if self.run_id else {}

    def start(self):
        if self.run is not None:
            return self.run
        mode = self.mode or os.environ.get("WANDB_MODE") or (
            "online" if self.wandb.login(prompt=False, verify=False) else "offline")
        self.run = self.wandb.init(
            project=self.project, entity=self.entity, dir=str(self.run_dir.resolve()), config=self.config,
            mode=mode, name=str(self.run_dir), group=self.sweep["dir"] if self.sweep else None, job_type="train",
            id=self.run_id, resume="allow" if self.run_id else None,
            reinit="finish_previous")  # a sweep job after one that crashed never logs into that job's run
        self.run_id = self.run.id
        self.run.define_metric("step/*", step_metric="step")
        self.run.define_metric("epoch/*", step_metric="epoch")
        self.run.define_metric("images/*", step_metric="epoch")
        return self.run

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        self.start().log({"step": step, **step_scalars(terms)})

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        self.start().log({"epoch": epoch, **epoch_scalars(row)})

    def log_images(self, epoch: int, grids: dict[str, Any]) -> None:
        images = {f"images/{k}": self.wandb.Image(image_grid(v)) for k, v in grids.items()}
        self.start().log({"epoch": epoch, **images})

    def close(self, metrics: dict[str, float]) -> None:
        run = self.start()
        run.summary.update(final_scalars(metrics))
        run.finish()  # offline, W&B prints the `wandb sync` command that uploads the run


# -- several at once ----------------------------------------------------------------------------------
class Loggers(Logger):
    """The chosen trackers behind one set of hooks. A tracker whose hook raises is warned about in one line and
    dropped; training goes on. The state of a dropped tracker is kept, so a later resume can try it again."""

    def __init__(self, trackers: dict[str, Logger]):
        self.trackers = dict(trackers)
        self.loaded: dict[str, Any] = {}

    def call(self, hook: str, *args) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                getattr(tracker, hook)(*args)
            except Exception as e:  # a side channel never stops training
                state = self.loaded.get(name) or _quiet_state(tracker)
                self.loaded.update({name: state} if state else {})
                del self.trackers[name]
                log.warning(f"logger={name} failed ({hook}: {one_line(e)}): it is off for the rest of this run, "
                            f"training goes on")

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        self.call("log_step", step, terms)

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        self.call("log_epoch", epoch, row)

    def log_images(self, epoch: int, grids: dict[str, Any]) -> None:
        self.call("log_images", epoch, grids)

    def close(self, metrics: dict[str, float]) -> None:
        self.call("close", metrics)

    def state_dict(self) -> dict[str, Any]:
        """{tracker: its state}: e.g. {"mlflow": {"run_id": ...}, "wandb": {"id": ...}}."""
        live = {name: _quiet_state(t) for name, t in self.trackers.items()}
        return {**self.loaded, **{name: s for name, s in live.items() if s}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = {k: v for k, v in (state or {}).items() if v}
        for name, tracker in self.trackers.items():
            if name in self.loaded:
                tracker.load_state_dict(self.loaded[name])


def _quiet_state(tracker: Logger) -> dict[str, Any]:
    try:
        return tracker.state_dict()
    except Exception:
        return {}


# -- from the config ----------------------------------------------------------------------------------
def flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: {"net": {"hidden": [64]}} -> {"net.hidden": [64]}."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as `a.b: value` pairs TensorBoard can show (lists and null as text)."""
    from aecli.config import plain

    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flatten(plain(cfg)).items()}


def chosen(cfg: DictConfig) -> dict[str, dict]:
    """{logger name: its options} from `cfg.logger`. Each conf/logger/<name>.yaml lands under `logger.<name>`;
    a checkpoint written before that layout has `logger.name` with the options beside it, read the same."""
    node = cfg.get("logger")
    node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    old = node.pop("name", None)
    if isinstance(old, str):
        node = {k: v for k, v in node.items() if isinstance(v, dict)} | {
            old: {k: v for k, v in node.items() if not isinstance(v, dict)}}
    return node


def hydra_sweep() -> dict[str, str] | None:
    """{"dir": the sweep folder, "job": this job's number} when Hydra runs this job in a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return {"dir": str(hc.sweep.dir), "job": str(hc.job.num)}


def logger_classes() -> dict[str, type[Logger]]:
    """The trackers aecli has, by their option of conf/logger/ (for configs that name no `_target_`: a checkpoint
    written before they did)."""
    return {cls.name: cls for cls in Logger.__subclasses__() if cls.name}


def logger_class(name: str, options: dict) -> type[Logger]:
    """The tracker class of `logger.<name>`: its `_target_`, else the one of that name; one line when unknown."""
    target = options.get("_target_")
    if target:
        from aecli.config import import_target

        cls = import_target(f"logger.{name}", target)
        if isinstance(cls, type) and issubclass(cls, Logger):
            return cls
        raise AecliError(f"logger.{name}._target_={target} is not an aecli logger (aecli/loggers.py)")
    known = logger_classes()
    if name not in known:
        raise AecliError(f"logger={name} is not a logger aecli knows: allowed {', '.join(sorted(known))} "
                         f"(several: logger=[csv,tensorboard,mlflow])")
    return known[name]


def logger_options(node) -> dict[str, tuple[type[Logger], schema.Options]]:
    """{name: (its class, its checked Options)} for each logger of a config's `logger` node."""
    node = chosen({"logger": node})
    out = {}
    for name, values in node.items():
        cls = logger_class(name, values)
        out[name] = cls, schema.instance(cls.Options, schema.check(cls.Options, values, f"logger.{name}"))
    return out


def make_logger(cfg: DictConfig, run_dir: Path) -> Loggers:
    """The loggers of `cfg.logger` behind one set of hooks (csv alone: none, the trainer writes metrics.csv)."""
    sweep = hydra_sweep()
    trackers: dict[str, Logger] = {}
    for name, (cls, options) in logger_options(cfg.get("logger")).items():
        if cls is CsvLogger:
            continue
        try:
            trackers[name] = cls(run_dir, cfg, sweep, options)
        except AecliError:  # the library is not installed: the user asked for it, so say so before training
            raise
        except Exception as e:
            log.warning(f"logger={name} failed to start ({one_line(e)}): training goes on without it")
    return Loggers(trackers)
