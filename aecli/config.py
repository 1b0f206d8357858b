"""From the composed config to objects: checks every value before any work starts, picks the device, builds the
components.

The config's keys mirror the code: `model`, `net` and `data` are components, each instantiated with Hydra from its
yaml (`_target_` names the class; the other keys are its constructor's keyword arguments, declared with their
defaults and allowed values in the class's `Options`). The net is handed to the model with the data's image shape
and class count; the top-level `lambda` becomes the model's `lam` (a Python keyword cannot be a parameter name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aecli import schema
from aecli.schema import is_int, is_number
from aecli.errors import AecliError


# Run-level keys -> (check, what is allowed). Keys missing from a config are skipped. The options of the model, the
# net and the data set are not here: each component declares its own (aecli/schema.py), and `validate` reads them.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lambda": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "latent_dim": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "epochs": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "seed": (is_int, "an integer"),
    "device.type": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "trainer.log_every": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "trainer.optimizer": (lambda v: v in ("adam", "adamw"), "adam or adamw"),
    "trainer.precision": (lambda v: v in ("fp32", "bf16"), "fp32 or bf16"),
    "trainer.progress": (lambda v: v in ("auto", "bar", "lines"), "auto, bar or lines"),
    "trainer.num_threads": (lambda v: v is None or v == "auto" or (is_int(v) and v >= 1),  # optuna-wiring: auto
                            "null, auto or an integer >= 1"),
    "trainer.compile": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.matmul_precision": (lambda v: v in ("auto", "highest", "high", "medium"),
                                 "auto, highest, high or medium"),
    "trainer.checkpoint_every_s": (lambda v: v is None or (is_number(v) and v > 0), "null or a number of seconds > 0"),
    "trainer.images_every": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.scheduler": (lambda v: v in ("none", "cosine", "step", "plateau", "iwae"),
                          "none, cosine, step, plateau or iwae"),
    "trainer.warmup_steps": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "trainer.min_lr_ratio": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "trainer.step_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.gamma": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "trainer.plateau_patience": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.grad_clip": (lambda v: v is None or (is_number(v) and v > 0), "null or a number > 0"),
    "trainer.early_stopping.patience": (lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"),
    "trainer.early_stopping.min_delta": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "resume": (lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
               "null or a run folder or checkpoint path"),
    "eval.at_end": (lambda v: isinstance(v, bool), "true or false"),
    "optimized_metric": (lambda v: isinstance(v, str) and v.startswith(("val_", "train_", "test_")),
                         "a metrics.csv column (val_recon, val_loss, ...) or test_<metric>"),
}
COMPONENTS = ("model", "net", "data")  # config groups built from their `_target_`, each with its declared Options


def _get(cfg: DictConfig, dotted: str):
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node[part]
    return OmegaConf.to_container(node) if isinstance(node, (DictConfig,)) or OmegaConf.is_list(node) else node


_MISSING = object()


def validate(cfg: DictConfig) -> None:
    """Check every run-level key against its range and every component's keys against its declared options; the
    first bad one raises a one-line AecliError."""
    for key, (ok, allowed) in RULES.items():
        value = _get(cfg, key)
        if value is _MISSING:
            continue
        if not ok(value):
            raise AecliError(f"{key}={value!r} is not allowed: {key} must be {allowed}")
    known = {"model", "lambda", "data", "net", "device", "trainer", "logger", "eval", "latent_dim", "epochs", "batch_size",
             "lr", "seed", "resume", "optimized_metric", "report"}
    extra = sorted(set(cfg) - known - {"hydra"})
    if extra:
        raise AecliError(f"{extra[0]} is not a key aecli reads (a +{extra[0]}=... adds it to the config): the "
                         f"top-level keys are {', '.join(sorted(known))}")
    from aecli.paths import config_dir

    trainer_keys = set(OmegaConf.load(config_dir() / "trainer" / "default.yaml"))
    extra = sorted(set(cfg.get("trainer") or {}) - trainer_keys)
    if extra:
        raise AecliError(f"trainer.{extra[0]} is not a trainer setting: allowed {', '.join(sorted(trainer_keys))}")
    if "lambda" not in cfg:
        raise AecliError("the model's yaml (conf/model/<name>.yaml) sets no top-level lambda: add `lambda: <its "
                         "default>` beside `model:`, the weight of the model's regularizer (0 when it has none)")
    for group in COMPONENTS:
        schema.check(component_class(cfg, group).Options, OmegaConf.to_container(cfg[group], resolve=True), group)


def component_class(cfg, group: str) -> type:
    """The class a component's `_target_` names, imported; one line when it is missing or cannot be imported."""
    node = cfg.get(group) if isinstance(cfg, (dict, DictConfig)) else None
    target = node.get("_target_") if node is not None else None
    if not target:
        raise AecliError(f"the {group} config has no _target_: conf/{group}/<name>.yaml must name the {group}'s "
                         f"class, e.g. _target_: aecli.models.vae.VAE")
    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except Exception as e:  # noqa: BLE001 - an import error of a user's component, in one line
        cause = e.__cause__ or e
        raise AecliError(f"{group}._target_={target} cannot be imported ({type(cause).__name__}: "
                         f"{str(cause).splitlines()[0][:160]})") from None
    if not isinstance(getattr(cls, "Options", None), type):
        raise AecliError(f"{group}._target_={target} declares no Options (a dataclass of its keys; aecli/schema.py)")
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
