"""From the composed config to objects: checks every value before any work starts, picks the device, builds the
components.

The config's keys mirror the code: `model`, `net` and `data` are components, each instantiated with Hydra from its
yaml (`_target_` names the class; the other keys are its constructor's keyword arguments, declared with their
defaults and allowed values in the class's `Options`). The net is handed to the model with the data's image shape
and class count; the top-level `lambda` becomes the model's `lam` (a Python keyword cannot be a parameter name).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from aecli import schema
from aecli.errors import AecliError
from aecli.rundir import METRICS
from aecli.settings import RunOptions


COMPONENTS = ("model", "net", "data")  # config groups built from their `_target_`, each with its declared Options


def validate(cfg: DictConfig) -> None:
    """The one check of a composed config, before any work: every run-level key against its declaration
    (aecli/settings.py), every component's and logger's keys against its class's Options, and the settings the end
    of the run needs (`check_run_settings`); the first bad one raises a one-line AecliError."""
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra", None)
    if "lambda" not in values:
        raise AecliError("the model's yaml (conf/model/<name>.yaml) sets no top-level lambda: add `lambda: <its "
                         "default>` beside `model:`, the weight of the model's regularizer (0 when it has none)")
    schema.check(RunOptions, values, "")
    for group in COMPONENTS:
        schema.check(component_class(cfg, group).Options, values[group], group)
    for name, options in (values.get("logger") or {}).items():  # each logger.<name> names its class
        if isinstance(options, dict) and options.get("_target_"):  # (a checkpoint's older layout: make_logger)
            schema.check(import_target(f"logger.{name}", options["_target_"]).Options, options, f"logger.{name}")
    check_run_settings(cfg)


def component_class(cfg, group: str) -> type:
    """The class a component's `_target_` names, imported; one line when it is missing or cannot be imported."""
    node = cfg.get(group) if isinstance(cfg, (dict, DictConfig)) else None
    target = node.get("_target_") if node is not None else None
    if not target:
        raise AecliError(f"the {group} config has no _target_: conf/{group}/<name>.yaml must name the {group}'s "
                         f"class, e.g. _target_: aecli.models.vae.VAE")
    return import_target(group, target)


def import_target(where: str, target) -> type:
    """The class a `_target_` names, imported, with its declared Options; one line when it cannot be imported or
    declares none."""
    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except Exception as e:  # noqa: BLE001 - an import error of a user's component, in one line
        cause = e.__cause__ or e
        raise AecliError(f"{where}._target_={target} cannot be imported ({type(cause).__name__}: "
                         f"{str(cause).splitlines()[0][:160]})") from None
    if not isinstance(getattr(cls, "Options", None), type):
        raise AecliError(f"{where}._target_={target} declares no Options (a dataclass of its keys; aecli/schema.py)")
    return cls


def resolve_device(kind: str) -> torch.device:
    """auto -> cuda when a GPU is available, else cpu; cuda without a GPU is an error."""
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise AecliError("device=cuda but no CUDA GPU is available here: use device=cpu or device=auto")
        return torch.device("cuda")
    if kind not in ("auto", "cpu"):
        raise AecliError(f"device={kind!r} is not allowed: use auto, cpu or cuda")
    return torch.device("cpu")


def _instantiate(node, group: str, **kwargs):
    """Build a component from its config node; a constructor's error becomes one line naming the component."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs, _convert_="all")
    except Exception as e:  # instantiate wraps constructor errors; give the cause in one line
        cause = e.__cause__ or e
        if isinstance(cause, AecliError):
            raise cause from None
        raise AecliError(f"cannot build {group} {node.get('_target_')}: {str(cause).splitlines()[0][:200]}") from None


def build_net(cfg):
    """The net of `cfg.net`, a recipe the model asks for its encoder and decoder (aecli/nets/__init__.py)."""
    from aecli.nets import Net

    net = _instantiate(cfg["net"], "net")
    if not isinstance(net, Net):
        raise AecliError(f"net._target_={cfg['net'].get('_target_')} is not an aecli net (aecli/nets/__init__.py)")
    return net


def build_dataset(cfg):
    """The data set of `cfg.data` (not loaded yet: its `load(device)` does that)."""
    from aecli.data import Dataset

    dataset = _instantiate(cfg["data"], "data")
    if not isinstance(dataset, Dataset):
        raise AecliError(f"data._target_={cfg['data'].get('_target_')} is not an aecli data set (aecli/data.py)")
    return dataset


def build_model(cfg: DictConfig | dict, image_shape=(1, 28, 28), n_classes: int = 10):
    """Instantiate `cfg.model` (its `_target_` class) with the net, latent size, lambda and the data's shape, after
    checking that the net meets its interface."""
    from aecli.nets import check_net

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    net = build_net(cfg)
    check_net(net, image_shape)
    return _instantiate(cfg.model, "model", net=net, latent_dim=cfg.latent_dim, lam=cfg["lambda"],
                        image_shape=list(image_shape), n_classes=n_classes)


def plain(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def check_run_settings(cfg: DictConfig, terms: list[str] | None = None) -> None:
    """What the end of the run needs, checked before it starts: a test optimized_metric exists only after the
    evaluation, and nothing may watch it during training. With `terms` (the model's loss terms,
    aecli.validation.loss_terms, known once the model is built) a validation optimized_metric must be a column the
    model writes in its metrics."""
    metric = cfg.optimized_metric
    if terms is not None and not metric.startswith("test_"):
        columns = ["val_recon", "val_loss", "train_loss", *(f"{p}_{k}" for p in ("val", "train") for k in terms),
                   "val_recon_term"]
        if metric not in columns:
            raise AecliError(f"optimized_metric={metric} is not a column this model writes: allowed "
                             f"{', '.join(dict.fromkeys(columns))}, or test_<metric> (docs/eval.md)")
    if not metric.startswith("test_"):
        return
    from aecli.metric_names import DESCRIPTIONS  # (the eval settings themselves: validate, from their declaration)

    if metric.startswith("test_"):
        watched = cfg.trainer.scheduler == "plateau" or cfg.trainer.early_stopping.patience is not None
        if watched:
            raise AecliError(f"optimized_metric={metric} is known only after training, and trainer.scheduler=plateau "
                             f"and trainer.early_stopping watch it every epoch: optimize a validation number (val_recon)")
        if metric.removeprefix("test_") not in DESCRIPTIONS:
            raise AecliError(f"optimized_metric={metric} is not a test metric: allowed "
                             f"{', '.join('test_' + k for k in DESCRIPTIONS)}, or a {METRICS} column")
        if not cfg.eval.at_end:
            raise AecliError(f"optimized_metric={metric} comes from the test-set evaluation: set eval.at_end=true, "
                             f"or optimize a validation number such as val_recon")
