"""The one trainer every model goes through.

    for epoch:                       model.on_epoch_start(epoch)
        for idx in batcher:          x, y = train[idx]  (uint8 on the device -> float per batch)
            terms = model.train_step(x, y, optimizers)       # the model's hook: one or several phases
            sums += terms                                     # on the device: no host sync
            every log_every steps: read the running mean once  # the only syncs in the loop (CUDA)
        validate, fit the code prior, write metrics.csv, images, last.pt and best.pt

Never lose a run (docs/robustness.md): `resume=` restores everything the loop depends on (weights,
optimizers, RNG states, the batcher's position, the epoch's partial sums), so an interrupted run resumed
ends bitwise equal to the run left alone on the CPU; Ctrl-C or SIGTERM finishes the step, writes last.pt
and exits 130 or 143; a non-finite loss stops the run within a step and never reaches a checkpoint.

The trainer sums nothing itself: it logs whatever terms the model returns. `val_recon` is measured the
same way for every model (Bernoulli cross-entropy of the mean reconstruction, nats per image), so runs
compare across models.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shlex
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from aecli.checkpoint import find_checkpoint, load_checkpoint, load_model_state, save_atomic
from aecli.config import build_model, plain, resolve_device, validate
from aecli.data import Batcher, Data, Split, load_data
from aecli.errors import AecliError
from aecli.loggers import make_logger
from aecli.models.base import bernoulli_nll_of_probs
from aecli.plots import plot_losses, recon_pairs, save_grid
from aecli.progress import EpochProgress, interactive
from aecli.sampling import draw_samples

log = logging.getLogger("aecli")

EVAL_BATCH = 1000  # images per forward pass when validating
PRIOR_FIT_IMAGES = 10000  # training images whose codes fit a code prior (models without one)


# Keys a resume may change; any other key given with resume= must equal the checkpoint's (bitwise resumes
# need the same threads too, but a new machine may need another count).
RESUMABLE = ("epochs", "device", "data.root", "data.download", "trainer.progress", "trainer.num_threads",
             "trainer.log_every", "eval", "logger")
STOP_AT_STEP = "AECLI_STOP_AT_STEP"  # testing hook: behave as if SIGTERM arrived during this step


class NonFiniteLoss(AecliError):
    """A NaN, an inf or a diverged loss or weight: `what` went bad; the run stops and its last good checkpoint
    stays (`kept` says which, or that none was written yet)."""

    exit_code = 3

    def __init__(self, what: str, lr: float, kept: str = "the last good checkpoint is kept"):
        super().__init__(f"{what}: training stopped and {kept}; try a lower lr than {lr:g}, e.g. lr={lr / 10:g}")


class Interrupted(AecliError):
    """Ctrl-C or SIGTERM: the step finished and last.pt was written; the exit code is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


DIVERGED = 100.0  # a total loss above DIVERGED x max(|the first step's loss|, 1) has diverged


class LossGuard:
    """Watches every loss term for NaN, inf and divergence without a host sync per step.

    `update` records on the device the first step whose terms were not all finite, or whose total loss rose
    above DIVERGED times the first step's (with the decoder started at the mean image that is about the mean
    image's loss: 100x it is a run that blew up, e.g. 2.4e30 nats at lr=1000), and the terms' values then;
    `check` reads that record (every step on the CPU, where reading is free; at the log_every sync points,
    before every checkpoint and at epoch end on CUDA) and raises NonFiniteLoss naming the step and the term.
    """

    def __init__(self, device: torch.device, lr: float):
        self.lr = lr
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.limit: torch.Tensor | None = None  # the divergence bound, set by the first step seen
        self.names: list[str] = []
        self.values: torch.Tensor | None = None
        self.kept = "no checkpoint was written yet"

    def update(self, terms: dict[str, torch.Tensor], step: int) -> None:
        values = torch.stack([v.detach().float() for v in terms.values()])
        loss = values[list(terms).index("loss")]
        if self.limit is None:
            self.limit = DIVERGED * loss.abs().clamp_min(1.0)
        if self.values is None or len(self.names) != len(values):
            self.names, self.values = list(terms), torch.zeros_like(values)
        bad = ~torch.isfinite(values).all() | (loss > self.limit)
        first = (self.first_step < 0) & bad
        self.first_step = torch.where(first, step, self.first_step)
        self.values = torch.where(first, values, self.values)

    def check(self, epoch: int) -> None:
        step = int(self.first_step)
        if step < 0:
            return
        values = self.values.tolist()
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            what = f"the loss term {self.names[bad[0]]!r} became {values[bad[0]]}"
        else:
            what = (f"the loss diverged: {values[self.names.index('loss')]:.3g} nats per image, over {DIVERGED:g}x "
                    f"its first value")
        raise NonFiniteLoss(f"{what} at step {step} (epoch {epoch})", self.lr, self.kept)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """torch's global generators (the DAE's noise and the VAE's eps are drawn from them)."""
    return {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {})}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _select(cfg, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _short(value) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        value = value.get("_target_", value.get("name", value))
    return str(value)


def resume_config(cfg: DictConfig, ckpt: dict, path: Path, overrides: list[str]) -> DictConfig:
    """The checkpoint's config, with the RESUMABLE keys the user gave (`epochs=20` to train longer).

    Any other key given with resume= must equal the checkpoint's: a resume continues the run as configured.
    """
    merged = OmegaConf.create(ckpt["config"])
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o} - {"resume"}
    for key in sorted(given):
        new = _select(cfg, key)
        if key.split(".")[0] in RESUMABLE or key in RESUMABLE:
            OmegaConf.update(merged, key, OmegaConf.to_container(new, resolve=True) if OmegaConf.is_config(new)
                             else new, force_add=True)
            continue
        old = _select(merged, key)
        same = (OmegaConf.to_container(new, resolve=True) if OmegaConf.is_config(new) else new) == \
            (OmegaConf.to_container(old, resolve=True) if OmegaConf.is_config(old) else old)
        if not same:
            raise AecliError(f"resume continues a run as it was configured: {key}={_short(new)} differs from the "
                             f"checkpoint's {key}={_short(old)} ({path}); only {', '.join(RESUMABLE)} may change")
    merged.resume = str(path)
    return merged


class RunFolderTaken(AecliError):
    """A new run was pointed at a folder that already holds a run."""


def check_new_run_dir(run_dir: Path) -> None:
    """A new run never writes into a folder that already holds a run."""
    if any((run_dir / name).exists() for name in ("checkpoints", "metrics.csv", "status.json")):
        raise RunFolderTaken(f"run folder {run_dir} already holds a run: a new run never writes into it; choose another "
                         f"hydra.run.dir, or continue that run with: aecli train resume={shlex.quote(str(run_dir))}")


@torch.no_grad()
def evaluate_split(model, split: Split, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean of every loss term over a split, plus `recon`: the Bernoulli NLL of the mean reconstruction."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)), device=split.images.device)
        x, y = split.batch(idx)
        terms = dict(model.loss(x, y))
        terms["recon_bce"] = bernoulli_nll_of_probs(model.reconstruct(x, y), x).mean()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * len(idx)
    model.train(was_training)
    return {k: (v / len(split)).item() for k, v in sums.items()}


COLLAPSE_MARGIN = 0.03  # val_recon within 3% of the mean image's: the codes carry (almost) nothing
CONSTANT_CODE = 1e-4  # every code dimension's standard deviation over the validation split below this


@torch.no_grad()
def mean_image_recon(split: Split, mean: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """val_recon of a model that reconstructs every image as `mean`: the floor of a code that says nothing."""
    total = 0.0
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split)), device=split.images.device))
        total += bernoulli_nll_of_probs(mean.expand_as(x), x).sum().item()
    return total / len(split)


@torch.no_grad()
def code_spread(model, split: Split, batch_size: int = EVAL_BATCH) -> float:
    """The largest standard deviation, over the split's images, of any code dimension (0: a constant code)."""
    was_training = model.training
    model.eval()
    codes = []
    for start in range(0, len(split), batch_size):
        x, y = split.batch(torch.arange(start, min(start + batch_size, len(split)), device=split.images.device))
        codes.append(model.encode(x, y).float())
    model.train(was_training)
    z = torch.cat(codes)
    return z.std(0).max().item() if len(z) > 1 else math.inf


def collapse_symptoms(model, val_terms: dict[str, float], val_recon: float, baseline: float,
                      spread: float, step: int) -> list[tuple[str, str]]:
    """Signs that the codes carry no information: (name, one line naming the symptom and what to try) each."""
    found = []
    if val_recon > (1 - COLLAPSE_MARGIN) * baseline:
        found.append(("mean_image", f"the reconstructions are no better than the mean image after {step} steps "
                                    f"(val_recon {val_recon:.1f}, the mean image {baseline:.1f} nats): the code "
                                    f"carries no information; train longer, or try a smaller lambda or lr"))
    if spread < CONSTANT_CODE:
        found.append(("constant_code", f"every code dimension is constant over the validation images (largest std "
                                       f"{spread:.2g}): saturated or dead code units; try a smaller lr or lambda, "
                                       f"or model.code_activation=none"))
    own = model.collapse_symptom(val_terms)
    if own:
        found.append(own)
    return found


@torch.no_grad()
def fit_code_prior(model, split: Split) -> None:
    """Give models without a prior one fitted to their training codes (see the model's `fit_prior`)."""
    if not hasattr(model, "fit_prior"):
        return
    was_training = model.training
    model.eval()
    x, y = split.batch(torch.arange(min(len(split), PRIOR_FIT_IMAGES), device=split.images.device))
    model.fit_prior(x, y)
    model.train(was_training)


class Trainer:
    """Trains `cfg.model` on `cfg.data`, writing everything into `run_dir`."""

    def __init__(self, cfg: DictConfig, run_dir: Path, multirun: bool = False):
        validate(cfg)
        if cfg.eval.at_end:  # the evaluation's settings are checked now, not after hours of training
            from aecli.evaluate import eval_settings

            eval_settings(cfg.eval)
        metric = cfg.optimized_metric
        if metric.startswith("test_"):
            from aecli.evaluate import DESCRIPTIONS

            if metric.removeprefix("test_") not in DESCRIPTIONS:
                raise AecliError(f"optimized_metric={metric} is not a test metric: allowed "
                                 f"{', '.join('test_' + k for k in DESCRIPTIONS)}, or a metrics.csv column")
            if not cfg.eval.at_end:
                raise AecliError(f"optimized_metric={metric} comes from the test-set evaluation: set eval.at_end=true, "
                                 f"or optimize a validation number such as val_recon")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device.type)
        if cfg.trainer.num_threads:
            torch.set_num_threads(int(cfg.trainer.num_threads))
        mode = cfg.trainer.progress
        self.bar = mode == "bar" or (mode == "auto" and interactive() and not multirun)
        seed_everything(cfg.seed)
        self.model = build_model(cfg).to(self.device)
        if "lambda" in self.model.ignores and cfg["lambda"] != 0:
            log.warning(f"model={self.model.name} ignores lambda={cfg['lambda']}: it has no regularizer weight "
                        f"(README.md, Models)")
        self.optimizers = self.model.configure_optimizers(cfg.lr, cfg.trainer.optimizer, cfg.trainer.weight_decay)
        if cfg.trainer.compile:  # the loss, forward and (AOTAutograd) backward, as fused kernels; weights untouched
            self.model.loss = torch.compile(self.model.loss)
        self.data: Data | None = None
        self.rows: list[dict] = []
        self.epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.best_epoch = 0
        self.batcher: Batcher | None = None
        self.logger = make_logger(cfg, self.run_dir)  # logger=csv|tensorboard (aecli/loggers.py)
        self.guard = LossGuard(self.device, cfg.lr)
        self.check_every_step = self.device.type == "cpu"  # free on the CPU; a host sync on CUDA
        self.partial: dict | None = None  # a mid-epoch checkpoint's partial epoch, to continue
        self.pending_rng: dict | None = None  # RNG states to restore where that checkpoint was taken
        self.stop_signal: int | None = None
        self.stop_at_step = int(os.environ.get(STOP_AT_STEP) or 0)
        self.warnings: list[str] = []  # collapse warnings, one per symptom and epoch (status.json keeps them)
        self.mean_image: torch.Tensor | None = None  # the training split's mean image, and its val_recon
        self.baseline = math.inf

    # -- resume ------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, cfg: DictConfig, run_dir: Path, overrides: list[str] = (), multirun: bool = False) -> Trainer:
        """A trainer in the state of `cfg.resume` (a run folder, whose last.pt is used, or a checkpoint)."""
        path = find_checkpoint(cfg.resume, "last")
        ckpt = load_checkpoint(path)
        cfg = resume_config(cfg, ckpt, path, list(overrides))
        trainer = cls(cfg, run_dir, multirun=multirun)
        trainer.load_state(ckpt, path)
        return trainer

    def load_state(self, ckpt: dict, path: Path) -> None:
        """Restore everything the loop depends on, so the run continues as if never stopped."""
        saved_device = ckpt.get("device", "cpu")
        if saved_device != self.device.type:
            raise AecliError(f"checkpoint {path} was trained on {saved_device} and this resume runs on "
                             f"{self.device.type}: resume on the same device (device={saved_device})")
        done = ckpt["epoch"] if ckpt.get("partial") is None else ckpt["epoch"] - 1
        if done >= self.cfg.epochs:
            raise AecliError(f"run of {path} has finished {done} of epochs={self.cfg.epochs}: give a larger "
                             f"epochs=N with resume= to train it longer")
        load_model_state(self.model, plain(self.cfg), ckpt, path)
        saved = ckpt.get("optimizers") or {}
        if set(saved) != set(self.optimizers):
            raise AecliError(f"checkpoint {path} has optimizers {sorted(saved)} but model {self.model.name} "
                             f"uses {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            try:
                opt.load_state_dict(saved[name])
            except (ValueError, KeyError) as e:
                raise AecliError(f"checkpoint {path}: optimizer {name!r} does not fit this model ({e})") from None
        self.epoch, self.step, self.rows = int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["metrics"])
        self.best_val, self.best_epoch = float(ckpt["best_val"]), int(ckpt.get("best_epoch", 0))
        if self.data is None:
            self.load_data()
        self.batcher.load_state_dict(ckpt["batcher"])
        self.partial = ckpt.get("partial")
        self.guard.kept = f"checkpoints/last.pt (step {self.step}) is kept"
        if self.partial is None:  # taken after an epoch ended: restore now, before the next epoch starts
            set_rng_state(ckpt["rng"], self.device)
        else:  # taken after a step: restore after on_epoch_start, where the step loop goes on
            self.pending_rng = ckpt["rng"]
        log.info(f"resuming {path} at epoch {self.epoch}, step {self.step}")

    # -- set-up ------------------------------------------------------------------------------------
    def load_data(self) -> Data:
        d = self.cfg.data
        self.data = load_data(d.name, d.root, self.device, download=d.download, limit=d.limit, val_size=d.val_size)
        self.batcher = Batcher(len(self.data.train), self.cfg.batch_size, self.device, seed=self.cfg.seed)
        return self.data

    def autocast(self):
        if self.cfg.trainer.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def check_optimized_metric(self) -> None:
        """A validation `optimized_metric` must be a metrics.csv column this model writes: its loss terms are
        named by one forward pass on two validation images (the RNG left as it was, so resumes stay exact)."""
        metric = self.cfg.optimized_metric
        if metric.startswith("test_"):
            return  # checked in __init__
        x, y = self.data.val.batch(torch.arange(min(2, len(self.data.val)), device=self.device))
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            terms = [k for k in self.model.loss(x, y) if k != "loss"]
        columns = ["val_recon", "val_loss", "train_loss", *(f"{p}_{k}" for p in ("val", "train") for k in terms),
                   "val_recon_term"]
        if metric not in columns:
            raise AecliError(f"optimized_metric={metric} is not a column this model writes: allowed "
                             f"{', '.join(dict.fromkeys(columns))}, or test_<metric> (docs/eval.md)")

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> float:
        if self.data is None:
            self.load_data()
        cfg = self.cfg
        self.mean_image = self.data.train.mean_image()
        self.baseline = mean_image_recon(self.data.val, self.mean_image)
        for name in ("checkpoints", "images", "plots"):
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in self.model.parameters())
        where = (f"cuda ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda"
                 else f"cpu ({torch.get_num_threads()} threads)")
        log.info(f"model {self.model.name} ({n_params:,} parameters, net={cfg.net.name}, latent_dim={cfg.latent_dim}, "
                 f"lambda={cfg['lambda']}) on {where}; data {cfg.data.name}: {len(self.data.train)} train, "
                 f"{len(self.data.val)} val images (the mean image scores val_recon {self.baseline:.1f}); "
                 f"run folder {self.run_dir}")
        if self.step == 0 and self.partial is None:  # a new run: the decoder starts at the mean image
            self.model.init_output(self.mean_image)
        self.check_optimized_metric()
        with self.catch_signals():
            while self.epoch < cfg.epochs or self.partial is not None:
                partial, self.partial = self.partial, None
                if partial is None:
                    self.epoch += 1
                self.model.on_epoch_start(self.epoch)
                if self.pending_rng is not None:
                    set_rng_state(self.pending_rng, self.device)
                    self.pending_rng = None
                train_terms, progress = self.train_epoch(partial)
                row = self.end_epoch(train_terms, progress)
                log.info(self.epoch_line(row))
                if self.stop_signal:  # arrived during validation: last.pt of this epoch is written
                    raise self.interrupted(f"at the end of epoch {self.epoch}")
        plot_losses(self.rows, self.run_dir / "plots" / "loss.png", title=f"{self.model.name} on {cfg.data.name}")
        log.info(f"done: best val_loss {self.best_val:.4f} (epoch {self.best_epoch}); run folder {self.run_dir}")
        return self.best_val

    def train_epoch(self, partial: dict | None = None) -> tuple[dict[str, float], EpochProgress]:
        """One pass over the batcher (or the rest of one, continuing a mid-epoch checkpoint's `partial`).

        The epoch's means weigh every batch by its images, so a short last batch counts for what it holds."""
        model, data, log_every = self.model, self.data, self.cfg.trainer.log_every
        model.train()
        sums: dict[str, torch.Tensor] = {}  # sum over batches of (the batch's mean term) x (its images)
        count = 0
        progress = EpochProgress(self.epoch, self.cfg.epochs, len(self.batcher), self.bar)
        if partial is not None:
            sums = {k: v.to(self.device) for k, v in partial["sums"].items()}
            count, progress.images = partial["count"], partial["images"]
            progress.start -= partial["seconds"]
        with progress:
            for idx in self.batcher:
                x, y = data.train.batch(idx)
                with self.autocast():
                    terms = model.train_step(x, y, self.optimizers)
                for k, v in terms.items():
                    sums[k] = sums[k] + v.float() * len(idx) if k in sums else v.float() * len(idx)
                count += 1
                self.step += 1
                self.guard.update(terms, self.step)
                progress.step(len(idx))
                if self.check_every_step or count % log_every == 0:
                    self.guard.check(self.epoch)
                if count % log_every == 0:
                    running = dict(zip(sums, (torch.stack(list(sums.values())) / progress.images).tolist()))  # one read
                    progress.show_loss(running["loss"])
                    self.logger.log_step(self.step, running)
                if self.stop_signal or self.step == self.stop_at_step:
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    self.save("last.pt", partial={"sums": {k: v.cpu() for k, v in sums.items()}, "count": count,
                                                  "images": progress.images, "seconds": progress.seconds})
                    raise self.interrupted(f"after step {self.step} (epoch {self.epoch}, batch {count}/"
                                           f"{len(self.batcher)})")
            self.guard.check(self.epoch)
            means = (dict(zip(sums, (torch.stack(list(sums.values())) / progress.images).tolist()))  # one read
                     if count else {})
        return means, progress

    # -- interrupts --------------------------------------------------------------------------------
    @contextmanager
    def catch_signals(self):
        """Ctrl-C or SIGTERM sets a flag the loop reads after each step; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum
            log.warning(f"{signal.Signals(signum).name}: finishing the current step, then writing "
                        f"checkpoints/last.pt (send it again to stop at once)")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def interrupted(self, where: str) -> Interrupted:
        name = signal.Signals(self.stop_signal).name
        return Interrupted(f"{name} {where}: wrote {self.run_dir / 'checkpoints' / 'last.pt'}; continue with: "
                           f"aecli train resume={shlex.quote(str(self.run_dir))}", self.stop_signal)

    def end_epoch(self, train_terms: dict[str, float], progress: EpochProgress) -> dict:
        model, data = self.model, self.data
        seconds = progress.seconds
        fit_code_prior(model, data.train)
        val = evaluate_split(model, data.val)
        bad = [k for k, v in val.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"the validation term {bad[0]!r} became {val[bad[0]]} after epoch {self.epoch} "
                                f"(step {self.step})", self.cfg.lr, self.guard.kept)
        # val_recon is the comparable number (the same measure for every model); the model's own
        # reconstruction term, in its own likelihood's units, is kept as val_recon_term.
        val["recon_term"] = val.pop("recon", None)
        row = {"epoch": self.epoch, "step": self.step, "train_loss": train_terms["loss"], "val_loss": val["loss"],
               "val_recon": val.pop("recon_bce")}
        row.update({f"train_{k}": v for k, v in train_terms.items() if k != "loss"})
        row.update({f"val_{k}": v for k, v in val.items() if k != "loss" and v is not None})
        row.update({"seconds": round(seconds, 3), "images_per_s": round(progress.images / max(seconds, 1e-9), 1)})
        symptoms = collapse_symptoms(model, val, row["val_recon"], self.baseline, code_spread(model, data.val),
                                     self.step)
        for _, symptom in symptoms:
            log.warning(f"collapse after epoch {self.epoch}: {symptom}")
            self.warnings.append(f"epoch {self.epoch}: {symptom}")
        row["collapse"] = " ".join(name for name, _ in symptoms)  # the symptoms' names; empty when healthy
        self.rows.append(row)
        self.logger.log_epoch(self.epoch, row)
        self.write_metrics()
        self.write_images()
        improved = row["val_loss"] < self.best_val
        if improved:
            self.best_val, self.best_epoch = row["val_loss"], self.epoch
        self.save("last.pt", *(["best.pt"] if improved else []))
        return row

    def save(self, *names: str, partial: dict | None = None) -> None:
        """Write the checkpoint under each name, atomically; never one with non-finite weights."""
        self.guard.check(self.epoch)
        weights = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if weights and not torch.stack([torch.isfinite(t).all() for t in weights]).all():
            raise NonFiniteLoss(f"the weights became non-finite by step {self.step} (epoch {self.epoch})", self.cfg.lr,
                                self.guard.kept)
        state = self.checkpoint(partial)
        for name in names:
            save_atomic(state, self.run_dir / "checkpoints" / name)
        where = f"epoch {self.epoch}" if partial is None else f"step {self.step}"
        self.guard.kept = f"checkpoints/last.pt ({where}) is kept"

    # -- outputs -----------------------------------------------------------------------------------
    def epoch_line(self, row: dict) -> str:
        terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k.startswith(("train_", "val_")))
        return f"epoch {row['epoch']}/{self.cfg.epochs}  {terms}  {row['images_per_s']:,.0f} img/s  {row['seconds']:.1f}s"

    def write_metrics(self) -> None:
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        path = self.run_dir / "metrics.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

    @torch.no_grad()
    def write_images(self) -> None:
        model, images = self.model, self.run_dir / "images"
        model.eval()
        x, y = self.data.val.batch(torch.arange(min(32, len(self.data.val)), device=self.device))
        recon = recon_pairs(x, model.reconstruct(x, y))
        save_grid(recon, images / f"recon_epoch_{self.epoch:03d}.png")
        samples, nrow = draw_samples(model, 64, seed=self.cfg.seed)
        save_grid(samples, images / f"samples_epoch_{self.epoch:03d}.png", nrow=nrow)
        self.logger.log_images(self.epoch, {"recon": recon, "samples": samples})
        model.train()

    def checkpoint(self, partial: dict | None = None) -> dict:
        """Everything a resume needs; `partial` (the epoch's sums so far) marks a mid-epoch checkpoint."""
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "epoch": self.epoch,
            "step": self.step,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "config": plain(self.cfg),
            "metrics": self.rows,
            "batcher": self.batcher.state_dict(),
            "rng": rng_state(self.device),
            "device": self.device.type,
            "partial": partial,
        }


@dataclass
class Outcome:
    """What a finished run reports to its job: the value of `optimized_metric` (what a sweep optimizes) and the
    collapse warnings (kept in status.json)."""

    metric: str
    value: float | None
    warnings: list[str]


def optimized_value(metric: str, rows: list[dict], best_epoch: int, final: dict) -> float | None:
    """`metric` at the best checkpoint: its metrics.csv value in the best epoch's row, or its test_ number from
    the evaluation of best.pt."""
    if metric.startswith("test_"):
        value = final.get(metric)
    else:
        value = next((r.get(metric) for r in rows if r["epoch"] == best_epoch), None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def train(cfg: DictConfig, run_dir: Path, multirun: bool = False, overrides: list[str] = ()) -> Outcome:
    """Train one run, or continue `cfg.resume` given the user's `overrides`."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if cfg.get("resume"):
        trainer = Trainer.resume(cfg, run_dir, overrides, multirun=multirun)
        own = Path(trainer.cfg.resume).resolve().parent.parent
        if own != run_dir.resolve():
            check_new_run_dir(run_dir)
            log.info(f"continuing {trainer.cfg.resume} in a new run folder {run_dir}")
    else:
        check_new_run_dir(run_dir)
        trainer = Trainer(cfg, run_dir, multirun=multirun)
    best = trainer.fit()
    final = {"best_val_loss": best}
    summary = ""
    if trainer.cfg.eval.at_end:
        from aecli.evaluate import evaluate_trained, headline

        final.update(evaluate_trained(trainer))
        summary = f"; test: {headline(final)}"
    trainer.logger.close(final)
    metric = trainer.cfg.optimized_metric
    value = optimized_value(metric, trainer.rows, trainer.best_epoch, final)
    log.info(f"finished in {time.perf_counter() - start:.1f}s; {metric} {value if value is None else f'{value:.4g}'}"
             f"{summary}")
    return Outcome(metric, value, trainer.warnings)
