"""The one trainer every model goes through: the loop. What it writes is the run writer's (aecli/writer.py), what
a resume restores is the resume state's (aecli/resume.py), and the run around it is the job's (aecli/job.py).

    for epoch:                       model.on_epoch_start(epoch)
        for idx in batcher:          x, y = train[idx]  (uint8 on the device -> float per batch)
            terms = model.train_step(x, y, optimizers)       # the model's hook: one or several phases
            sums += terms x images                            # on the device: no host sync
            every log_every steps: read the running mean once  # the only syncs in the loop (CUDA)
        fit the code prior, validate, look for collapse, write the row, the images, last.pt and best.pt

Never lose a run (docs/robustness.md): Ctrl-C or SIGTERM finishes the step, writes last.pt and exits 130 or 143; a
NaN, infinite or diverged loss stops the run within a step and never reaches a checkpoint.

The trainer sums nothing itself: it logs whatever terms the model returns. `val_recon` is measured the same way for
every model (Bernoulli cross-entropy of the mean reconstruction, nats per image), so runs compare across models.
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable  # optuna-wiring

import torch
from omegaconf import DictConfig

from aecli.checkpoint import find_checkpoint, load_checkpoint
from aecli.cores import threads_for  # optuna-wiring
from aecli.config import build_dataset, build_model, plain, resolve_device, validate
from aecli.data import Batcher, Data, Split
from aecli.errors import AecliError
from aecli.loggers import make_logger
from aecli.models.base import bernoulli_nll_of_probs
from aecli.paths import aecli_command
from aecli.progress import EpochProgress, interactive
from aecli.metric_names import direction
from aecli.resume import LoopState, checkpoint_dict, restore, resume_config, set_rng_state
from aecli.schedule import EarlyStopping, LrSchedule
from aecli.writer import RunWriter

log = logging.getLogger("aecli")

EVAL_BATCH = 1000  # images per forward pass when validating
PRIOR_FIT_IMAGES = 10000  # training images whose codes fit a code prior (models without one)


class NonFiniteLoss(AecliError):
    """A NaN, an inf or a diverged loss or weight: `what` went bad; the run stops and its last good checkpoint
    stays (`kept` says which, or that none was written yet)."""

    exit_code = 3

    def __init__(self, what: str, lr: float, kept: str = "the last good checkpoint is kept"):
        super().__init__(f"{what}: training stopped and {kept}; try a lower lr than {lr:g}, e.g. lr={lr / 10:g}")


class Interrupted(AecliError):
    """Ctrl-C, SIGTERM or SIGUSR1: the step finished and last.pt was written (`stage` training), or the evaluation
    at the end stopped (`stage` evaluation); the exit code is 128 + the signal."""

    def __init__(self, message: str, signum: int, stage: str = "training"):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.stage = stage


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # SIGUSR1: SLURM's warning before the time limit


@contextmanager
def interruptible(where: str, stage: str):
    """Turn a stop signal into `Interrupted` at once (nothing to finish first): for work that can simply be redone,
    such as the evaluation at the end of a run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(f"{signal.Signals(signum).name} {where}", signum, stage)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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
    """Give a model whose prior is fitted (code_prior = "fitted") a mixture fitted to its training codes."""
    if model.code_prior != "fitted":
        return
    was_training = model.training
    model.eval()
    x, y = split.batch(torch.arange(min(len(split), PRIOR_FIT_IMAGES), device=split.images.device))
    model.fit_prior(x, y)
    model.train(was_training)


class Trainer:
    """Trains `cfg.model` on `cfg.data`, writing everything into `run_dir`.

    `data`: the loaded data set, when the caller has it (else it is loaded here); `stop_at_step`: act as if SIGTERM
    arrived during that step (the resume tests' hook; the job reads it from AECLI_STOP_AT_STEP)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, multirun: bool = False, data: Data | None = None,
                 stop_at_step: int = 0):
        validate(cfg)
        check_end_of_run_settings(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device.type)
        self.matmul_precision = set_matmul_precision(cfg.trainer.get("matmul_precision", "auto"), self.device)
        threads = threads_for(cfg.trainer.num_threads)  # optuna-wiring: null | N | auto (aecli/cores.py)
        if threads:
            torch.set_num_threads(threads)
        mode = cfg.trainer.progress
        self.bar = mode == "bar" or (mode == "auto" and interactive() and not multirun)
        self.data = data if data is not None else build_dataset(cfg).load(self.device)
        self.data.seed_binarization(cfg.seed)  # data.binarize=dynamic: the run's own draws of binary images
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.data.image_shape, self.data.n_classes).to(self.device)
        if self.model.conditional and not self.data.labeled:
            raise AecliError(f"model={self.model.name} needs class labels and data {self.data.name} has none: give "
                             f"labelled images (data.path with labels) or an unconditional model")
        if self.model.start_warning():
            log.warning(self.model.start_warning())
        pixels = math.prod(self.data.image_shape)
        if cfg.latent_dim > pixels:
            n_params = sum(p.numel() for p in self.model.parameters())
            log.warning(f"latent_dim={cfg.latent_dim} is larger than the {pixels} pixels of an image: the code can "
                        f"copy the image ({n_params:,} parameters); an overcomplete code needs a regularizer")
        if cfg.batch_size > len(self.data.train):
            log.warning(f"batch_size={cfg.batch_size} is larger than the {len(self.data.train)} training images: "
                        f"each epoch is one step of {len(self.data.train)} images")
        if "lambda" in self.model.ignores and cfg["lambda"] != 0:
            log.warning(f"model={self.model.name} ignores lambda={cfg['lambda']}: it has no regularizer weight "
                        f"(README.md, Models)")
        self.optimizers = self.model.configure_optimizers(cfg.lr, cfg.trainer.optimizer, cfg.trainer.weight_decay)
        self.model.grad_clip = cfg.trainer.grad_clip
        t = cfg.trainer
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        maximize = direction(cfg.optimized_metric) == "maximize"  # what plateau and early stopping watch
        self.schedule = LrSchedule(t.scheduler, t.warmup_steps, cfg.epochs * -(-len(self.data.train) // cfg.batch_size),
                                   t.min_lr_ratio, t.step_size, t.gamma, t.plateau_patience, maximize)
        self.scheduled = t.scheduler != "none" or t.warmup_steps > 0
        self.stopper = EarlyStopping(t.early_stopping.patience, t.early_stopping.min_delta, maximize)
        if cfg.trainer.compile:  # the loss, forward and (AOTAutograd) backward, as fused kernels; weights untouched
            self.model.loss = torch.compile(self.model.loss)
        self.batcher = Batcher(len(self.data.train), cfg.batch_size, self.device, seed=cfg.seed)
        self.state = LoopState()
        self.pending_rng: dict | None = None  # RNG states to restore where a mid-epoch checkpoint was taken
        self.logger = make_logger(cfg, self.run_dir)  # logger=csv|tensorboard|... (aecli/loggers.py)
        self.writer = RunWriter(self.run_dir, self.logger)
        self.guard = LossGuard(self.device, cfg.lr)
        self.check_every_step = self.device.type == "cpu"  # free on the CPU; a host sync on CUDA
        self.stop_signal: int | None = None
        self.stop_at_step = stop_at_step
        # trainer.checkpoint_every_s: last.pt by time (None: after every epoch); best.pt waits in memory till then
        self.checkpoint_every_s = cfg.trainer.get("checkpoint_every_s")
        self.last_saved = time.monotonic()
        self.best_snapshot: dict | None = None
        self.prior_fitted_at: tuple[int, int] | None = None  # (epoch, step) of the last fit of a fitted prior
        self.warnings: list[str] = []  # collapse warnings, one per symptom and epoch (status.json keeps them)
        self.mean_image = self.data.train.mean_image()  # the training split's mean image, and its val_recon
        self.baseline = mean_image_recon(self.data.val, self.mean_image)
        self.epoch_hooks: list[Callable[[dict], None]] = []  # optuna-wiring: called with each epoch's row, saved

    @classmethod
    def resume(cls, cfg: DictConfig, run_dir: Path, overrides: list[str] = (), **kwargs) -> Trainer:
        """A trainer in the state of `cfg.resume` (a run folder, whose last.pt is used, or a checkpoint)."""
        path = find_checkpoint(cfg.resume, "last")
        ckpt = load_checkpoint(path)
        trainer = cls(resume_config(cfg, ckpt, path, list(overrides)), run_dir, **kwargs)
        trainer.state, trainer.pending_rng = restore(ckpt, path, trainer.model, trainer.optimizers, trainer.batcher,
                                                     trainer.cfg, trainer.device)
        trainer.logger.load_state_dict(ckpt.get("logger") or {})  # a tracker continues its run, no duplicate
        trainer.data.load_binarization_state(ckpt.get("binarization"))  # data.binarize=dynamic: the same draws
        schedules = ckpt.get("schedules") or {}
        if schedules:
            trainer.schedule.load_state_dict(schedules["lr"])
            trainer.stopper.load_state_dict(schedules["early_stopping"])
        trainer.guard.kept = f"checkpoints/last.pt (step {trainer.state.step}) is kept"
        log.info(f"resuming {path} at epoch {trainer.state.epoch}, step {trainer.state.step}")
        return trainer

    def autocast(self):
        if self.cfg.trainer.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def check_optimized_metric(self) -> None:
        """A validation `optimized_metric` must be a metrics.csv column this model writes: its loss terms are
        named by one forward pass on two validation images (the RNG left as it was, so resumes stay exact)."""
        metric = self.cfg.optimized_metric
        if metric.startswith("test_"):
            return  # checked with the evaluation's settings
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
        """Train to `cfg.epochs`; returns the best val_loss."""
        cfg, state = self.cfg, self.state
        self.writer.prepare()
        n_params = sum(p.numel() for p in self.model.parameters())
        where = (f"cuda ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda"
                 else f"cpu ({torch.get_num_threads()} threads)")
        net = "none" if "net" in self.model.ignores else self.model.net_description
        log.info(f"model {self.model.name} ({n_params:,} parameters, net {net}, latent_dim "
                 f"{cfg.latent_dim}, lambda {cfg['lambda']}) on {where}; data {self.data.name}: {len(self.data.train)} "
                 f"train, {len(self.data.val)} val images of {list(self.data.image_shape)} (the mean image scores "
                 f"val_recon {self.baseline:.1f}); run folder {self.run_dir}")
        if state.step == 0 and state.partial is None:  # a new run: the decoder starts at the mean image
            self.model.init_output(self.mean_image)
        self.check_optimized_metric()
        with self.catch_signals():
            while (state.epoch < cfg.epochs or state.partial is not None) and not state.stopped_early:
                partial, state.partial = state.partial, None
                if partial is None:
                    state.epoch += 1
                self.model.on_epoch_start(state.epoch)
                if self.pending_rng is not None:
                    set_rng_state(self.pending_rng, self.device)
                    self.pending_rng = None
                train_terms, progress = self.train_epoch(partial)
                row = self.end_epoch(train_terms, progress)
                log.info(self.epoch_line(row))
                if self.stop_signal:  # arrived during validation: last.pt of this epoch is written
                    raise self.interrupted(f"at the end of epoch {state.epoch}")
        self.writer.loss_plot(state.rows, f"{self.model.name} on {self.data.name}", self.model.loss_units,
                              state.best_epoch)
        log.info(f"done: best val_loss {state.best_val:.4f} (epoch {state.best_epoch}); run folder {self.run_dir}")
        return state.best_val

    def train_epoch(self, partial: dict | None = None) -> tuple[dict[str, float], EpochProgress]:
        """One pass over the batcher (or the rest of one, continuing a mid-epoch checkpoint's `partial`).

        The epoch's means weigh every batch by its images, so a short last batch counts for what it holds."""
        model, data, log_every = self.model, self.data, self.cfg.trainer.log_every
        model.train()
        sums: dict[str, torch.Tensor] = {}  # sum over batches of (the batch's mean term) x (its images)
        count = 0
        progress = EpochProgress(self.state.epoch, self.cfg.epochs, len(self.batcher), self.bar)
        if partial is not None:
            sums = {k: v.to(self.device) for k, v in partial["sums"].items()}
            count, progress.images = partial["count"], partial["images"]
            progress.start -= partial["seconds"]
        with progress:
            for idx in self.batcher:
                x, y = data.train.batch(idx)
                if self.scheduled:
                    self.schedule.apply(self.optimizers, self.base_lrs, self.state.step + 1, self.state.epoch)
                with self.autocast():
                    terms = model.train_step(x, y, self.optimizers)
                for k, v in terms.items():
                    sums[k] = sums[k] + v.float() * len(idx) if k in sums else v.float() * len(idx)
                count += 1
                self.state.step += 1
                self.guard.update(terms, self.state.step)
                progress.step(len(idx))
                if self.check_every_step or count % log_every == 0:
                    self.guard.check(self.state.epoch)
                if count % log_every == 0:
                    running = dict(zip(sums, (torch.stack(list(sums.values())) / progress.images).tolist()))  # one read
                    progress.show_loss(running["loss"])
                    self.logger.log_step(self.state.step, running)
                if self.checkpoint_due() and count < len(self.batcher):  # by time, in the middle of an epoch
                    self.save("last.pt", partial={"sums": {k: v.cpu() for k, v in sums.items()}, "count": count,
                                                  "images": progress.images, "seconds": progress.seconds})
                if self.stop_signal or self.state.step == self.stop_at_step:
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    self.save("last.pt", partial={"sums": {k: v.cpu() for k, v in sums.items()}, "count": count,
                                                  "images": progress.images, "seconds": progress.seconds})
                    raise self.interrupted(f"after step {self.state.step} (epoch {self.state.epoch}, batch {count}/"
                                           f"{len(self.batcher)})")
            self.guard.check(self.state.epoch)
            means = (dict(zip(sums, (torch.stack(list(sums.values())) / progress.images).tolist()))  # one read
                     if count else {})
        return means, progress

    # -- interrupts --------------------------------------------------------------------------------
    @contextmanager
    def catch_signals(self):
        """Ctrl-C, SIGTERM or SIGUSR1 sets a flag the loop reads after each step; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum
            log.warning(f"{signal.Signals(signum).name}: finishing the current step, then writing "
                        f"checkpoints/last.pt (send it again to stop at once)")

        self.previous_handlers = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, h in self.previous_handlers.items():
                signal.signal(s, h)

    def interrupted(self, where: str) -> Interrupted:
        """The exception that ends an interrupted run, last.pt written. A SIGUSR1 is then handed to the handler it
        replaced, if any: submitit's, which requeues a SLURM job (that job continues here with resume=auto)."""
        signum = self.stop_signal
        previous = getattr(self, "previous_handlers", {}).get(signum)
        if signum == signal.SIGUSR1 and callable(previous):
            previous(signum, None)
        return Interrupted(f"{signal.Signals(signum).name} {where}: wrote {self.run_dir / 'checkpoints' / 'last.pt'}; "
                           f"continue with: {aecli_command()} train resume={shlex.quote(str(self.run_dir))}", signum)

    def end_epoch(self, train_terms: dict[str, float], progress: EpochProgress) -> dict:
        model, data, state = self.model, self.data, self.state
        seconds = progress.seconds
        if model.fit_sets_weights:
            self.fit_prior()
        val = evaluate_split(model, data.val)
        bad = [k for k, v in val.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"the validation term {bad[0]!r} became {val[bad[0]]} after epoch {state.epoch} "
                                f"(step {state.step})", self.cfg.lr, self.guard.kept)
        # val_recon is the comparable number (the same measure for every model); the model's own
        # reconstruction term, in its own likelihood's units, is kept as val_recon_term.
        val["recon_term"] = val.pop("recon", None)
        row = {"epoch": state.epoch, "step": state.step, "train_loss": train_terms["loss"], "val_loss": val["loss"],
               "val_recon": val.pop("recon_bce")}
        row.update({f"train_{k}": v for k, v in train_terms.items() if k != "loss"})
        row.update({f"val_{k}": v for k, v in val.items() if k != "loss" and v is not None})
        row.update({"seconds": round(seconds, 3), "images_per_s": round(progress.images / max(seconds, 1e-9), 1)})
        symptoms = collapse_symptoms(model, val, row["val_recon"], self.baseline, code_spread(model, data.val),
                                     state.step)
        for _, symptom in symptoms:
            log.warning(f"collapse after epoch {state.epoch}: {symptom}")
            self.warnings.append(f"epoch {state.epoch}: {symptom}")
        row["collapse"] = " ".join(name for name, _ in symptoms)  # the symptoms' names; empty when healthy
        row["lr"] = self.cfg.lr * self.schedule.factor(max(state.step, 1), state.epoch)  # at the epoch's last step
        self.watch(row)
        state.rows.append(row)
        self.writer.epoch(row, state.rows)
        last = state.epoch >= self.cfg.epochs or state.stopped_early
        if last or state.epoch % self.cfg.trainer.get("images_every", 1) == 0:
            self.fit_prior()
            self.writer.images(model, data, state.epoch, self.cfg.seed)
        improved = row["val_loss"] < state.best_val
        if improved:
            state.best_val, state.best_epoch = row["val_loss"], state.epoch
        if last or self.stop_signal or self.checkpoint_every_s is None or self.checkpoint_due():
            self.save("last.pt", *(["best.pt"] if improved else []))
        elif improved:  # best.pt waits for the next checkpoint: a copy of this epoch's state in memory
            self.fit_prior()
            self.best_snapshot = self.checkpoint_state(None, copy=True)
        for hook in self.epoch_hooks:  # optuna-wiring: after the row and the checkpoint are written
            hook(row)
        return row

    def checkpoint_due(self) -> bool:
        """trainer.checkpoint_every_s: whether that long has passed since last.pt was written."""
        return self.checkpoint_every_s is not None and time.monotonic() - self.last_saved >= self.checkpoint_every_s

    def fit_prior(self) -> None:
        """Fit a fitted code prior (aecli/models/prior.py) to the codes of the training split, once per state of the
        weights: before the grids are drawn and before an epoch's checkpoint, so both sample from a prior that fits
        the weights they hold (a mid-epoch checkpoint keeps the last fit)."""
        if self.prior_fitted_at != (self.state.epoch, self.state.step):
            fit_code_prior(self.model, self.data.train)
            self.prior_fitted_at = (self.state.epoch, self.state.step)

    def save(self, *names: str, partial: dict | None = None) -> None:
        """Write the checkpoint under each name, atomically; never one with non-finite weights."""
        self.guard.check(self.state.epoch)
        weights = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if weights and not torch.stack([torch.isfinite(t).all() for t in weights]).all():
            raise NonFiniteLoss(f"the weights became non-finite by step {self.state.step} (epoch {self.state.epoch})",
                                self.cfg.lr, self.guard.kept)
        if partial is None:
            self.fit_prior()
        checkpoint = self.checkpoint_state(partial)
        if "best.pt" in names:
            self.best_snapshot = None
        elif self.best_snapshot is not None:  # an epoch that improved while checkpoints waited (checkpoint_every_s)
            self.writer.checkpoint(self.best_snapshot, "best.pt")
            self.best_snapshot = None
        self.writer.checkpoint(checkpoint, *names)  # serialized once for every name
        self.last_saved = time.monotonic()
        where = f"epoch {self.state.epoch}" if partial is None else f"step {self.state.step}"
        self.guard.kept = f"checkpoints/last.pt ({where}) is kept"

    def checkpoint_state(self, partial: dict | None, copy: bool = False) -> dict:
        """What a checkpoint holds now (aecli/resume.py); `copy`: every tensor copied to the CPU, to be written
        later."""
        schedules = {"lr": self.schedule.state_dict(), "early_stopping": self.stopper.state_dict()}
        state = checkpoint_dict(self.model, self.optimizers, self.state, plain(self.cfg), self.batcher, self.device,
                                self.data, self.logger.state_dict(), partial, schedules)
        if copy:  # new containers throughout, every tensor a copy
            state = torch.utils._pytree.tree_map(
                lambda v: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v, state)
        return state

    def watch(self, row: dict) -> None:
        """The epoch's monitored metric (optimized_metric) to the plateau schedule and to early stopping."""
        metric, value = self.cfg.optimized_metric, row.get(self.cfg.optimized_metric)
        if self.schedule.end_epoch(value):
            log.info(f"plateau: {metric} has not improved for {self.schedule.patience} epochs; the learning rate is "
                     f"now {self.cfg.trainer.gamma ** self.schedule.reductions:g} x lr")
        if self.stopper.update(value, row["epoch"]):
            self.state.stopped_early = True
            log.info(f"early stopping after epoch {row['epoch']}: {metric} has not improved by more than "
                     f"{self.stopper.min_delta:g} for {self.stopper.patience} epochs (best {self.stopper.best:.4g} at "
                     f"epoch {self.stopper.best_epoch})")

    def epoch_line(self, row: dict) -> str:
        terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items()
                          if k.startswith(("train_", "val_")) and isinstance(v, (int, float)))
        return f"epoch {row['epoch']}/{self.cfg.epochs}  {terms}  {row['images_per_s']:,.0f} img/s  {row['seconds']:.1f}s"


def set_matmul_precision(setting: str, device: torch.device) -> str:
    """trainer.matmul_precision: how float32 matmuls are computed (torch.set_float32_matmul_precision). `highest`
    is full float32; `high` lets CUDA use TF32 (10-bit mantissa inputs, float32 sums: about 1e-3 relative error
    per product, 2x to 8x the matmul speed on Ampere and later); `medium` allows bfloat16. auto: high on CUDA,
    highest on the CPU (where it changes nothing on most processors)."""
    precision = ("high" if device.type == "cuda" else "highest") if setting == "auto" else setting
    torch.set_float32_matmul_precision(precision)
    return precision


def check_end_of_run_settings(cfg: DictConfig) -> None:
    """The evaluation's settings and a test optimized_metric are checked before training, not after it."""
    metric = cfg.optimized_metric
    if not cfg.eval.at_end and not metric.startswith("test_"):
        return
    from aecli.evaluate import DESCRIPTIONS, eval_settings

    if cfg.eval.at_end:
        eval_settings(cfg.eval)
    if metric.startswith("test_"):
        watched = cfg.trainer.scheduler == "plateau" or cfg.trainer.early_stopping.patience is not None
        if watched:
            raise AecliError(f"optimized_metric={metric} is known only after training, and trainer.scheduler=plateau "
                             f"and trainer.early_stopping watch it every epoch: optimize a validation number (val_recon)")
        if metric.removeprefix("test_") not in DESCRIPTIONS:
            raise AecliError(f"optimized_metric={metric} is not a test metric: allowed "
                             f"{', '.join('test_' + k for k in DESCRIPTIONS)}, or a metrics.csv column")
        if not cfg.eval.at_end:
            raise AecliError(f"optimized_metric={metric} comes from the test-set evaluation: set eval.at_end=true, "
                             f"or optimize a validation number such as val_recon")
