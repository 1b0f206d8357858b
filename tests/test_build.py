"""The parts of a run (aecli/build.py): built from the config, with a warning for each setting known not to do
what it says, and matmul precision set for the device."""

from __future__ import annotations

import pytest
import torch

from aecli.build import set_matmul_precision
from aecli.errors import AecliError
from aecli.loop import Trainer

from test_resume import compose_tiny, fast_data, shared_data  # noqa: F401  (fixtures)
from test_loop import compose_tiny as compose_run, odd_data, trainer_on  # noqa: F401  (fixtures)


def test_a_cae_lambda_above_the_measured_range_is_said_when_the_run_starts(data_root, odd_data, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="aecli"):
        trainer_on(odd_data, compose_run(data_root, model="cae", **{"lambda": 1000}), tmp_path / "a")
    assert "lambda=1000 is above the range measured to learn (0.1 to 100" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aecli"):
        trainer_on(odd_data, compose_run(data_root, model="cae", **{"lambda": 100}), tmp_path / "b")
    assert "above the range" not in caplog.text


def test_settings_that_cannot_do_what_they_say_are_said_when_the_run_starts(data_root, odd_data, tmp_path, caplog):
    """batch_size above the training images (one step an epoch) and a latent_dim above the pixels (a code that can
    copy the image) were accepted in silence."""
    import logging

    with caplog.at_level(logging.WARNING, logger="aecli"):
        trainer_on(odd_data, compose_run(data_root, batch_size=100000, latent_dim=1000), tmp_path)
    assert "batch_size=100000 is larger than the 513 training images" in caplog.text
    assert "latent_dim=1000 is larger than the 784 pixels of an image" in caplog.text


def test_matmul_precision_auto_is_tf32_on_cuda_only(data_root, fast_data, tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        assert set_matmul_precision("auto", torch.device("cuda")) == "high"
        assert set_matmul_precision("auto", torch.device("cpu")) == "highest"
        assert set_matmul_precision("medium", torch.device("cpu")) == torch.get_float32_matmul_precision() == "medium"
        with pytest.raises(AecliError, match="trainer.matmul_precision='fast' is not allowed.*auto, highest, high"):
            Trainer(compose_tiny(data_root, "trainer.matmul_precision=fast"), tmp_path / "run")
    finally:
        torch.set_float32_matmul_precision(before)
