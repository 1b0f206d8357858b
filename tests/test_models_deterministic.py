"""aecli/models/deterministic.py: what ae, cae, dae and sae share; tied weights need a net that can tie them."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from aecli.config import build_model
from aecli.errors import AecliError
from conftest import REPO, tiny_overrides


def test_tied_weights_need_a_net_that_ties_them(data_root):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=tiny_overrides(data_root, net="conv", model="ae") + ["model.tied=true"])
    with pytest.raises(AecliError, match="tied=true needs a net whose decoder can share the encoder's weights"):
        build_model(cfg)
