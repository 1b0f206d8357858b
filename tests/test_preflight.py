"""aecli/preflight.py: `aecli train`'s line checked before Hydra runs, each mistake in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aecli.paths import config_dir
from aecli.preflight import check_group_choices, check_overrides, overrides_of

CONF = config_dir()


def test_unknown_group_option_is_refused_with_the_allowed_list(capsys):
    with pytest.raises(SystemExit) as exit_:
        check_group_choices(["model=nope"], CONF)
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("aecli: model=nope") and "vae" in err and "\n" not in err


def test_a_cross_model_sweep_is_checked_against_each_swept_model(capsys):
    """`-m model=ae,dae model.recon_loss=mse` is valid (both models have the key) and was refused when the check
    composed the default model; a key one swept model lacks is named with that model."""
    check_overrides(["-m", "model=ae,dae", "model.recon_loss=mse"], config_dir())
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:
        check_overrides(["-m", "model=ae,vae", "model.recon_loss=mse"], config_dir())
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "model.recon_loss is not a key of this config (with model=vae)" in err


def test_a_sweep_over_a_key_a_model_ignores_is_said_once_before_the_jobs(capsys):
    """`-m model=cae,dae lambda=1,10,100` ran three identical dae jobs in silence."""
    check_overrides(["-m", "model=cae,dae,pca", "lambda=1,10,100", "net=mlp,conv"], config_dir())
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["aecli: warning: model=dae ignores lambda: its jobs over lambda=1,10,100 repeat the same run",
                     "aecli: warning: model=pca ignores lambda: its jobs over lambda=1,10,100 repeat the same run",
                     "aecli: warning: model=pca ignores net: its jobs over net=mlp,conv repeat the same run"]

def test_hydra_s_flags_and_their_words_are_not_overrides():
    assert overrides_of(["--cfg", "job", "lambda=7", "-sc", "install=bash", "-m", "model=ae"]) == ["lambda=7", "model=ae"]
    assert overrides_of(["--info", "model=ae"]) == ["model=ae"]


@pytest.mark.parametrize("args,needle", [
    (["model=vae,", "lambda=1"], "aecli: model=vae, ends in a comma: overrides are separated by spaces, not commas; "
                                 "write model=vae lambda=1"),
    (["data.path=~/x.npz"], f"aecli: data.path=~/x.npz: ~ is not expanded inside an override; write "
                            f"data.path={Path('~/x.npz').expanduser()}"),
    (["logger=[csv,nope]"], "aecli: logger=nope is not a logger aecli knows: allowed csv, mlflow, tensorboard, wandb"),
    (["-m", "model=cae,nope"], "aecli: model=nope is not a model aecli knows"),
])
def test_group_choices_and_typos_are_one_line_naming_what_to_write(args, needle, capsys):
    """`model=vae, lambda=1` said "model= is not a model aecli knows"; `data.path=~/x.npz` a lexer exception."""
    with pytest.raises(SystemExit) as e:
        check_group_choices(args, CONF)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(needle), err


@pytest.mark.parametrize("args,needle", [
    (["net=conv", "net.hidden=[64]"], "net.hidden is not a key of this config: the conv net's keys are net.channels, "
                                      "net.activation; net.hidden is a key of net=mlp"),
    (["model.noise=0.1"], "model.noise is not a key of this config: the vae model's keys are model.likelihood, "
                          "model.kl_warmup_epochs, model.iw_samples; model.noise is a key of model=dae"),
    (["nokey=3"], "nokey is not a key of this config (`aecli train --cfg job` prints every key"),
    (["trainer.scheduler=linear"], "trainer.scheduler='linear' is not allowed: trainer.scheduler must be one of none, "
                                   "cosine, step, plateau, iwae"),
])
def test_a_key_the_chosen_component_lacks_names_its_keys_and_who_has_it(args, needle, capsys):
    """`net=conv net.hidden=[64]` pointed at the model's keys; a bad value is refused before Hydra makes a folder."""
    with pytest.raises(SystemExit):
        check_overrides(args, CONF)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
