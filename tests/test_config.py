"""Config composition: every option of every group composes, and values are checked before work starts."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from aecli.paths import config_dir
from aecli import schema
from aecli.config import COMPONENTS, build_model, component_class, validate
from aecli.errors import AecliError
from conftest import tiny_overrides

CONF = config_dir()
GROUPS = ["model", "data", "device", "net", "trainer", "logger", "eval"]


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_with(f"{group}={option}")
    validate(cfg)
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group in COMPONENTS:  # built from its _target_, whose class is named as the option
        assert component_class(cfg, group).name == option


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("net", options("net"))
def test_every_model_builds_on_every_net(model, net):
    cfg = compose_with(f"model={model}", f"net={net}", "latent_dim=3")
    try:
        m = build_model(cfg)
    except AecliError as e:  # a documented combination that is refused (e.g. tied weights on conv)
        assert net == "conv", e
        return
    assert m.latent_dim == 3


def test_defaults_match_the_interface():
    cfg = compose_with()
    assert cfg.model._target_ == "aecli.models.vae.VAE" and cfg["lambda"] == 1.0
    assert cfg.data._target_ == "aecli.datasets.mnist.MNIST" and cfg.device.type == "auto"
    assert cfg.net._target_ == "aecli.nets.mlp.MLP"
    for key in ("latent_dim", "epochs", "batch_size", "lr", "seed"):
        assert key in cfg
    assert cfg.data.download is True and cfg.data.limit is None and cfg.data.val_size > 0


def test_lambda_override_reaches_the_model():
    model = build_model(compose_with("lambda=4.5"))
    assert model.lam == 4.5


@pytest.mark.parametrize("override,needle", [
    ("lambda=-1", "lambda"), ("lambda=abc", "lambda"), ("epochs=0", "epochs"), ("batch_size=-3", "batch_size"),
    ("lr=0", "lr"), ("latent_dim=0", "latent_dim"), ("data.limit=0", "data.limit"), ("net.activation=nope", "activation"),
])
def test_bad_values_are_refused_in_one_line(override, needle):
    with pytest.raises(AecliError) as err:
        validate(compose_with(override))
    message = str(err.value)
    assert needle in message and "\n" not in message and "must be" in message


@pytest.mark.parametrize("group,option", [(g, o) for g in COMPONENTS for o in options(g)])
def test_each_yaml_holds_its_component_s_declared_defaults(group, option):
    """A component declares its options once (its Options); its yaml documents the same keys with the same defaults
    (a model's yaml also sets the top-level lambda to the model's default_lambda)."""
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    node = raw[group] if group == "model" else raw
    cls = component_class({group: node}, group)
    values = {k: v for k, v in OmegaConf.to_container(node).items() if k != "_target_"}
    declared = schema.defaults(cls.Options)
    if group == "data" and "root" in values:  # the yaml reads AECLI_DATA_ROOT; the class has the plain default
        values["root"] = declared["root"]
    assert values == declared
    if group == "model":
        assert raw["lambda"] == cls.default_lambda


@pytest.mark.parametrize("yaml,node,options", [
    ("config.yaml", None, "RunOptions"), ("trainer/default.yaml", None, "TrainerOptions"),
    ("eval/default.yaml", None, "EvalOptions"), ("device/auto.yaml", None, "DeviceOptions"),
    *[(f"logger/{name}.yaml", None, name) for name in options("logger")],
])
def test_each_settings_yaml_holds_its_declared_defaults(yaml, node, options):
    """The trainer's, the evaluation's, the device's, the loggers' and the top-level settings are declared once
    (aecli/settings.py, each logger's Options in aecli/loggers.py); their yaml documents the same keys with the same
    defaults, and a logger's yaml names its class."""
    from aecli import settings
    from aecli.loggers import logger_class

    raw = OmegaConf.to_container(OmegaConf.load(CONF / yaml))
    if yaml.startswith("logger/"):
        cls = logger_class(options, raw).Options
        assert logger_class(options, raw).name == options
    else:
        cls = getattr(settings, options)
    values = {k: v for k, v in raw.items() if k not in ("_target_", "defaults", "hydra")}
    declared = schema.defaults(cls)
    if options == "RunOptions":  # the groups are composed in; lambda comes with each model's yaml
        declared = {k: v for k, v in declared.items() if k not in ("model", "data", "net", "logger", "device", "trainer",
                                                                    "eval", "lambda")}
    assert values == declared


def test_validation_reads_declarations_only():
    """No setting rules outside the declarations: no yaml read at run time, no lists of allowed values."""
    import re

    package = CONF.parent / "aecli" if (CONF.parent / "aecli").is_dir() else CONF.parent
    offenders = [f"{p.name}:{i}" for p in package.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\b(RULES|MINIMUM|SCHEDULERS|LOGGERS)\b|OmegaConf\.load\(", line)]
    assert offenders == []


@pytest.mark.parametrize("override,needle", [
    ("trainer.optimizer=rmsprop", "trainer.optimizer='rmsprop' is not allowed: trainer.optimizer must be one of adam, adamw, sgd"),
    ("+trainer.bogus=1", "trainer.bogus is not a trainer setting: allowed optimizer"),
    ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience=0 is not allowed"),
    ("+trainer.early_stopping.bogus=1", "trainer.early_stopping.bogus is not an option of this "
                                        "trainer.early_stopping: allowed patience, min_delta"),
    ("eval.knn_k=0", "eval.knn_k=0 is not allowed: it must be an integer >= 1"),
    ("logger.csv.bogus=1", "logger.csv.bogus is not an option of this logger.csv"),
    ("logger=tensorboard", None), ("logger.tensorboard.flush_secs=0", "logger.tensorboard.flush_secs=0 is not allowed"),
])
def test_trainer_eval_and_logger_settings_are_checked_against_their_declarations(override, needle):
    overrides = [override] if not override.startswith("logger.tensorboard") else ["logger=tensorboard", override]
    if override.startswith("logger.csv"):
        overrides = ["+" + override]
    if needle is None:
        validate(compose_with(*overrides))
        return
    with pytest.raises(AecliError) as err:
        validate(compose_with(*overrides))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_component_option_and_a_missing_lambda_are_one_line():
    with pytest.raises(AecliError, match=r"model\.noise is not an option of this model: allowed likelihood, "
                                         r"kl_warmup_epochs"):
        validate(compose_with("+model.noise=gaussian"))
    cfg = compose_with("model=dae")
    OmegaConf.set_struct(cfg, False)
    del cfg["lambda"]
    with pytest.raises(AecliError, match="sets no top-level lambda"):
        validate(cfg)
    with pytest.raises(AecliError, match=r"model\.level=1\.5 is not allowed: model\.level must be a number in "
                                         r"\[0, 1\]"):
        validate(compose_with("model=dae", "model.level=1.5"))


# -- the paper experiments (conf/experiment/paper_*.yaml): the papers' models and protocol ---------------------
@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "experiment").glob("paper_*.yaml")))
def test_paper_experiments_compose_and_build(name):
    from aecli import evaluate as ev

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={name}"])
    validate(cfg)
    model = build_model(cfg)
    assert cfg.eval.protocol == "paper" and ev.eval_settings(cfg.eval).iw_samples == 5000
    if name.startswith("paper_vae"):
        assert (cfg.data.binarize, list(cfg.net.hidden), cfg.latent_dim, cfg.net.activation) == \
            ("dynamic", [200, 200], 50, "tanh")
    assert ev.first_layer_weight(model) is not None  # every reproduction draws its filters
    if name in ("paper_ae_mnist", "paper_cae_mnist", "paper_dae_mnist"):  # Rifai et al.'s models: W' = W^T, sigmoid
        assert (cfg.model.tied, cfg.model.code_activation, list(cfg.net.hidden)) == (True, "sigmoid", [])
        assert model.decoder.out.weight is model.encoder.out.weight
    if name == "paper_iwae_mnist":
        assert cfg.model.iw_samples == 5 and cfg.data.binarize == "dynamic"
    if name == "paper_aae_mnist":
        assert (cfg.model.prior_std, cfg.latent_dim, list(cfg.net.hidden)) == (5.0, 8, [1200, 1200])
        assert cfg.model.dropout == 0.2  # 331 nats with it at 20 epochs, against the paper's 340 (docs/results.md)
    if name in ("paper_ae_mnist", "paper_cae_mnist", "paper_dae_mnist"):
        assert cfg.eval.finetune_epochs == 30  # Table 1's number: the error after supervised fine-tuning


# -- every run-level value against its range -------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("epochs=0", "epochs"), ("batch_size=0", "batch_size"), ("lr=0", "lr"), ("lr=-1e-3", "lr"),
    ("lambda=-1", "lambda"), ("latent_dim=0", "latent_dim"), ("data.val_size=0", "data.val_size"),
    ("data.limit=0", "data.limit"), ("seed=1.5", "seed"), ("trainer.log_every=0", "trainer.log_every"),
    ("trainer.weight_decay=-1", "trainer.weight_decay"), ("epochs=ten", "epochs"), ("lr=nan", "lr"),
    ("trainer.compile=maybe", "trainer.compile"),
])
def test_every_numeric_key_is_checked_against_its_range(data_root, override, key):
    cfg = compose_with(*tiny_overrides(data_root), override)
    with pytest.raises(AecliError, match=rf"^{key}=.* is not allowed: {key} must be "):
        validate(cfg)
