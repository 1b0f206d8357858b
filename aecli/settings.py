"""The run's own settings, declared once: the top level of conf/config.yaml, the device (conf/device/), the trainer
(conf/trainer/default.yaml) and the evaluation (conf/eval/default.yaml). Each yaml documents the same keys with the
same defaults for users (tests/test_config.py checks that they agree); `aecli.config.validate` checks a composed
config against these declarations and the components' own (aecli/schema.py). This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from aecli import schema
from aecli.rundir import METRICS

METRIC_PREFIXES = ("val_", "train_", "test_")  # optimized_metric: a column of the metrics or test_<metric>


@dataclass(kw_only=True)
class EarlyStoppingOptions(schema.Options):
    """trainer.early_stopping (aecli/schedule.py)."""

    patience: int | None = schema.integer(None, low=1, optional=True)
    min_delta: float = schema.number(0.0, low=0)


@dataclass(kw_only=True)
class TrainerOptions(schema.Options):
    """conf/trainer/default.yaml: how the loop runs (aecli/loop.py), its learning rate's schedule (aecli/schedule.py)."""

    unknown = "{name} is not a trainer setting: allowed {allowed}"

    optimizer: str = schema.choice("adam", "adamw", "sgd")
    weight_decay: float = schema.number(0.0, low=0)
    log_every: int = schema.integer(50, low=1)
    progress: str = schema.choice("auto", "bar", "lines")
    num_threads: int | str | None = schema.custom(  # auto: the free cores (aecli/cores.py); N; null: torch's default
        "auto", lambda v: v is None or v == "auto" or (schema.is_int(v) and v >= 1), "null, auto or an integer >= 1")
    compile: bool = schema.boolean(False)
    precision: str = schema.choice("fp32", "bf16")
    matmul_precision: str = schema.choice("auto", "highest", "high", "medium")
    checkpoint_every_s: float | None = schema.number(None, low=0, low_open=True, optional=True,
                                                     what="a number of seconds")
    images_every: int = schema.integer(1, low=1)
    scheduler: str = schema.choice("none", "cosine", "step", "plateau", "iwae")
    warmup_steps: int = schema.integer(0, low=0)
    min_lr_ratio: float = schema.number(0.0, low=0, high=1)
    step_size: int = schema.integer(10, low=1)
    gamma: float = schema.number(0.1, low=0, high=1, low_open=True)
    plateau_patience: int = schema.integer(5, low=1)
    grad_clip: float | None = schema.number(None, low=0, low_open=True, optional=True)
    early_stopping: dict = schema.section(EarlyStoppingOptions)


@dataclass(kw_only=True)
class EvalOptions(schema.Options):
    """conf/eval/default.yaml: the test-set evaluation (aecli/evaluate.py); null counts mean every image."""

    unknown = "{name} is not an eval setting: allowed {allowed}"
    bad = "{name}={value!r} is not allowed: it must be {rule}"

    at_end: bool = schema.boolean(True)
    protocol: str = schema.choice("fast", "paper")
    test_images: int | None = schema.integer(None, low=1, optional=True)
    probe_train_images: int | None = schema.integer(10000, low=1, optional=True)
    probe_steps: int = schema.integer(100, low=1)
    probe_l2: float = schema.number(1.0e-4, low=0)
    knn_k: int = schema.integer(5, low=1)
    finetune_epochs: int = schema.integer(0, low=0)
    finetune_lr: float = schema.number(0.05, low=0, low_open=True)
    jacobian_images: int = schema.integer(500, low=1)
    iw_samples: int = schema.integer(1000, low=1)
    iw_images: int | None = schema.integer(100, low=1, optional=True)
    iw_chunk: int = schema.integer(100, low=1)
    mmd_images: int = schema.integer(2000, low=2)
    frechet_images: int = schema.integer(5000, low=2)
    label_samples: int = schema.integer(100, low=1)
    sparse_threshold: float = schema.number(0.05, low=0, high=1, low_open=True, high_open=True)
    classifier: str = schema.choice("mlp", "cnn")
    classifier_epochs: int = schema.integer(1, low=1)
    parzen_samples: int | None = schema.integer(None, low=2, optional=True)
    contraction_images: int = schema.integer(1000, low=1)
    cache_dir: str | None = schema.text(None, optional=True)
    pictures: bool = schema.boolean(True)


@dataclass(kw_only=True)
class DeviceOptions(schema.Options):
    """conf/device/<name>.yaml: where the run computes (aecli.config.resolve_device)."""

    type: str = schema.choice("auto", "cpu", "cuda")


@dataclass(kw_only=True)
class RunOptions(schema.Options):
    """The top level of conf/config.yaml: the run's own numbers beside the config groups. `lambda` has no default
    here: each model's yaml sets it (conf/model/<name>.yaml)."""

    unknown = "{name} is not a key aecli reads (a +{name}=... adds it to the config): the top-level keys are {allowed}"

    model: dict = schema.component("model")
    data: dict = schema.component("data")
    net: dict = schema.component("net")
    logger: dict = schema.component("logger")
    device: dict = schema.section(DeviceOptions)
    trainer: dict = schema.section(TrainerOptions)
    eval: dict = schema.section(EvalOptions)
    lambda_: float = schema.number(schema.MISSING, low=0)
    latent_dim: int = schema.integer(16, low=1)
    epochs: int = schema.integer(10, low=1)
    batch_size: int = schema.integer(128, low=1)
    lr: float = schema.number(1.0e-3, low=0, low_open=True)
    seed: int = schema.integer(0)
    resume: str | None = schema.custom(None, lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
                                       "null or a run folder or checkpoint path")
    optimized_metric: str = schema.custom("val_recon", lambda v: isinstance(v, str) and v.startswith(METRIC_PREFIXES),
                                          f"a {METRICS} column (val_recon, val_loss, ...) or test_<metric>")
    report: bool = schema.boolean(True)
