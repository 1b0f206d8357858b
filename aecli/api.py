"""aecli from Python: train a run and use a finished one in a notebook.

    import aecli
    run_dir = aecli.train(["model=vae", "epochs=1", "data.limit=2000"])   # the overrides of `aecli train`
    run = aecli.load_run(run_dir, device="cpu")
    x, y = run.data.test.batch(torch.arange(8))
    z = run.encode(x)                  # codes [8, latent_dim]
    x_hat = run.reconstruct(x)         # mean reconstructions in [0, 1]
    images = run.sample(16, label=3)   # from the model's prior (a label for a conditional model)

Nothing here is a second implementation: `train` runs what `aecli train` runs (the same checks, trainer and
evaluation), and a `Run` is the model and checkpoint `aecli sample` and `aecli eval` load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from aecli.errors import AecliError


class Run:
    """A finished run: `model` (eval mode, on `device`), `config`, `metrics` (the metrics.csv rows), `path`, and the
    data set it was trained on as `data` (loaded on first use)."""

    def __init__(self, path: str | Path, device: str = "auto", which: str = "best"):
        from aecli.runs import load_trained

        self.model, self.checkpoint, self.path = load_trained(path, which=which, device=device)
        self.device = next(self.model.parameters()).device
        self.config: DictConfig = OmegaConf.create(self.checkpoint["config"])
        self.metrics: list[dict] = list(self.checkpoint.get("metrics") or [])
        self._data = None

    @property
    def data(self):
        """The run's data set (train, val and test splits on the run's device)."""
        if self._data is None:
            from aecli.runs import load_run_data

            self._data = load_run_data(self.checkpoint, self.device)
        return self._data

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """Images as the model takes them: float in [0, 1] on its device (uint8 0..255 is scaled)."""
        x = torch.as_tensor(x)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        return self._image_batch(x).to(self.device)

    def _image_batch(self, x: torch.Tensor) -> torch.Tensor:
        """x as [N, C, H, W] of the run's image shape: [N, C, H, W] or [C, H, W], and for a one-channel run [N, H, W]
        or [H, W]; any other shape ends with one line naming the shape the run takes and the shape given."""
        c, h, w = self.model.image_shape
        shape = tuple(x.shape)
        if shape[-3:] == (c, h, w) and x.dim() in (3, 4):
            return x.view(-1, c, h, w)
        if c == 1 and shape[-2:] == (h, w) and x.dim() in (2, 3):
            return x.view(-1, 1, h, w)
        one = f", or [N, {h}, {w}] / [{h}, {w}] for its one channel" if c == 1 else ""
        raise AecliError(f"images of shape {list(shape)} do not fit this run: it takes [N, {c}, {h}, {w}] or "
                         f"[{c}, {h}, {w}]{one}")

    def _codes(self, z) -> torch.Tensor:
        """z as [N, latent_dim] ([latent_dim] is one code); any other shape is one line naming both shapes."""
        z = torch.as_tensor(z, device=self.device).float()
        d = self.model.latent_dim
        if z.shape[-1:] != (d,) or z.dim() not in (1, 2):
            raise AecliError(f"codes of shape {list(z.shape)} do not fit this run: it takes [N, {d}] or [{d}]")
        return z.view(-1, d)

    def _labels(self, y, n: int) -> torch.Tensor | None:
        if y is None:
            if self.model.conditional:
                raise AecliError(f"model {self.model.name} needs labels: pass y (or label=)")
            return None
        y = torch.as_tensor(y, device=self.device).long()
        return y.expand(n) if y.dim() == 0 else y

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The codes of images x [B, C, H, W] (or [C, H, W]; [B, H, W], [H, W] for one channel), [B, latent_dim] (the
        posterior mean for variational models)."""
        x = self._images(x)
        return self.model.encode(x, self._labels(y, len(x)))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """The mean images in [0, 1] of codes z [B, latent_dim]."""
        z = self._codes(z)
        return self.model.mean_image(self.model.decode(z, self._labels(y, len(z))))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The mean reconstructions in [0, 1] of images x."""
        x = self._images(x)
        return self.model.reconstruct(x, self._labels(y, len(x)))

    @torch.no_grad()
    def sample(self, n: int, label: int | None = None, seed: int = 0) -> torch.Tensor:
        """n images from the model's prior (of class `label` for a conditional model; one row per class without)."""
        from aecli.sampling import draw_samples

        return draw_samples(self.model, n, seed, label)[0]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.model.name}, epochs={len(self.metrics)})"


def load_run(path: str | Path, device: str = "auto", which: str = "best") -> Run:
    """A finished run folder (its best.pt, or `which="last"`) or a checkpoint file, ready to use."""
    return Run(path, device=device, which=which)


def train(overrides: list[str] = (), run_dir: str | Path | None = None) -> Path:
    """Train one run as `aecli train OVERRIDES` would (one run, not a sweep) and return its folder: the same job
    the command runs (aecli/job.py: the folder's checks and lock, the trainer, the evaluation, status.json ok,
    failed, interrupted or pruned) inside Hydra's own job runner, which writes `.hydra/` and train.log as for the
    command line's runs. The run folder defaults to outputs/DATE/TIME under the current directory. Call it as
    often as you like in one process; a bad value raises AecliError with the command line's one-line message."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext

    import aecli.sweep  # noqa: F401  (the resolvers the configs use)
    from aecli.job import protect_run_folders, quote_value, train_one
    from aecli.overrides import parse
    from aecli.paths import config_dir
    from aecli.rundir import unlock_folder

    overrides = list(overrides)
    flags = [o for o in overrides if o.startswith("-")]
    bad = flags + [o.input_line for o in parse([o for o in overrides if o not in flags]) if o.is_sweep_override()]
    if bad:
        raise AecliError(f"aecli.train runs one run: {bad[0]} is a sweep or a flag; call it once per value instead")
    if run_dir is not None:
        overrides.append(f"hydra.run.dir={quote_value(Path(run_dir))}")
    overrides = protect_run_folders(overrides)

    trained: list[Path] = []

    def task(cfg: DictConfig) -> float | None:
        hc = HydraConfig.get()
        trained.append(Path(hc.runtime.output_dir))
        return train_one(cfg, trained[0], list(hc.overrides.task))

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
            context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg))
            done = run_job(task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                           hydra_context=context)
    finally:  # the folder is this process's only while it trains: a terminal may resume it afterwards
        for folder in [*trained, *([run_dir] if run_dir is not None else [])]:
            unlock_folder(folder)
    if done.status == JobStatus.FAILED:  # what stopped the run (JobReturn.return_value would log it again first)
        raise done._return_value
    return Path(done.hydra_cfg.hydra.runtime.output_dir)
