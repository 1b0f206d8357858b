"""From the composed config to objects: checks every value before any work starts, picks the device, builds the model.

The config's keys mirror the code: `model` is instantiated with Hydra (`_target_` names the model class;
the other keys are its constructor's parameters), `net` is handed to the model, the top-level
`lambda` becomes the model's `lam` (a Python keyword cannot be a parameter name).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aecli.errors import AecliError
from aecli.nets import ACTIVATIONS


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (check, what is allowed). Keys missing from a config (a model without that option) are skipped.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lambda": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "latent_dim": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "seed": (_is_int, "an integer"),
    "data.limit": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "data.val_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.download": (lambda v: isinstance(v, bool), "true or false"),
    "device.type": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "trainer.log_every": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "trainer.optimizer": (lambda v: v in ("adam", "adamw"), "adam or adamw"),
    "trainer.precision": (lambda v: v in ("fp32", "bf16"), "fp32 or bf16"),
    "trainer.progress": (lambda v: v in ("auto", "bar", "lines"), "auto, bar or lines"),
    "trainer.num_threads": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "trainer.compile": (lambda v: isinstance(v, bool), "true or false"),
    "data.name": (lambda v: v in ("mnist", "fashion_mnist"), "mnist or fashion_mnist"),
    "data.root": (lambda v: isinstance(v, str) and v.strip() != "", "a folder path"),
    "resume": (lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
               "null or a run folder or checkpoint path"),
    "eval.at_end": (lambda v: isinstance(v, bool), "true or false"),
    "optimized_metric": (lambda v: isinstance(v, str) and v.startswith(("val_", "train_", "test_")),
                         "a metrics.csv column (val_recon, val_loss, ...) or test_<metric>"),
    "net.hidden": (lambda v: isinstance(v, (list, tuple)) and all(_is_int(w) and w >= 1 for w in v),
                   "a list of integer widths >= 1, e.g. [512,256]"),
    "net.channels": (lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= 2
                     and all(_is_int(w) and w >= 1 for w in v), "a list of one or two channel counts, e.g. [32,64]"),
    "net.activation": (lambda v: v in ACTIVATIONS, "one of " + ", ".join(ACTIVATIONS)),
    # model options (each model's yaml documents them)
    "model.likelihood": (lambda v: v in ("bernoulli", "continuous_bernoulli", "gaussian"),
                         "bernoulli, continuous_bernoulli or gaussian"),
    "model.kl_warmup_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "model.tied": (lambda v: isinstance(v, bool), "true or false"),
    "model.dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "model.layer_match": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "model.code_activation": (lambda v: v in ("none", "sigmoid", "relu", "tanh"), "none, sigmoid, relu or tanh"),
    "model.recon_loss": (lambda v: v in ("bce", "mse"), "bce or mse"),
    "model.jacobian": (lambda v: v in ("exact", "estimate"), "exact or estimate"),
    "model.projections": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "model.noise": (lambda v: v in ("gaussian", "masking", "salt_pepper"), "gaussian, masking or salt_pepper"),
    "model.level": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "model.sparsity": (lambda v: v in ("kl", "l1"), "kl or l1"),
    "model.rho": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "model.prior": (lambda v: v in ("gaussian", "mixture"), "gaussian or mixture"),
    "model.disc_hidden": (lambda v: isinstance(v, (list, tuple)) and all(_is_int(w) and w >= 1 for w in v),
                          "a list of integer widths >= 1, e.g. [256,256]"),
}


def _get(cfg: DictConfig, dotted: str):
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node[part]
    return OmegaConf.to_container(node) if isinstance(node, (DictConfig,)) or OmegaConf.is_list(node) else node


_MISSING = object()


def validate(cfg: DictConfig) -> None:
    """Check every known key against its range; the first bad one raises a one-line AecliError."""
    for key, (ok, allowed) in RULES.items():
        value = _get(cfg, key)
        if value is _MISSING:
            continue
        if not ok(value):
            raise AecliError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def resolve_device(kind: str) -> torch.device:
    """auto -> cuda when a GPU is available, else cpu; cuda without a GPU is an error."""
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise AecliError("device=cuda but no CUDA GPU is available here: use device=cpu or device=auto")
        return torch.device("cuda")
    if kind not in ("auto", "cpu"):
        raise AecliError(f"device={kind!r} is not allowed: use auto, cpu or cuda")
    return torch.device("cpu")


def build_model(cfg: DictConfig | dict):
    """Instantiate `cfg.model` (its `_target_` class) with the net, latent size and lambda."""
    from hydra.utils import instantiate

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        return instantiate(cfg.model, net=OmegaConf.to_container(cfg.net, resolve=True),
                           latent_dim=cfg.latent_dim, lam=cfg["lambda"], _convert_="all")
    except Exception as e:  # instantiate wraps constructor errors; give the cause in one line
        cause = e.__cause__ or e
        raise AecliError(f"cannot build model {cfg.model.get('_target_')}: {cause}") from None


def plain(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
