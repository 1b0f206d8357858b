"""The learning-rate schedule and early stopping (aecli/schedule.py)."""

from __future__ import annotations

import math

import pytest

from aecli.schedule import LrSchedule, iwae_stage


def test_iwae_schedule_is_burdas():
    """lr * 10^(-i/7) for 3^i epochs, i = 0..7: 3,280 epochs (Burda et al. 2015, Sec. 5)."""
    ends = [sum(3 ** j for j in range(i + 1)) for i in range(8)]  # 1, 4, 13, ..., 3280
    assert ends[-1] == 3280
    for i, end in enumerate(ends):
        assert iwae_stage(end) == i and iwae_stage(end + 1) == i + 1
    assert LrSchedule("iwae").factor(step=1, epoch=5) == pytest.approx(10 ** (-2 / 7))


def test_cosine_is_a_function_of_the_step_and_the_horizon():
    s = LrSchedule("cosine", total_steps=8, min_lr_ratio=0.1)
    assert s.factor(1, 1) == 1.0 and s.factor(5, 2) == pytest.approx(0.55) and s.factor(9, 3) == pytest.approx(0.1)
    warm = LrSchedule("cosine", warmup_steps=4, total_steps=8, min_lr_ratio=0.1)
    assert warm.factor(2, 1) == pytest.approx(0.5 * s.factor(2, 1)) and warm.factor(5, 2) == s.factor(5, 2)


def test_a_moved_horizon_is_said_and_the_rate_stays_a_function_of_step_and_horizon():
    """epochs=2, then resume=... epochs=4: the rate follows the 4-epoch cosine from the resume point on (a function
    of the step and the run's steps only), and the move is said in one line (it was silent: a saw-tooth)."""
    short, longer = LrSchedule("cosine", total_steps=8), LrSchedule("cosine", total_steps=16)
    line = longer.load_state_dict(short.state_dict(), step=8)
    assert line == ("the cosine schedule's horizon moved from 8 to 16 steps (epochs changed): from step 9 on the "
                    "rate follows the 16-step cosine, 0.5 x lr there instead of 0 x lr")
    assert longer.factor(9, 3) == LrSchedule("cosine", total_steps=16).factor(9, 3) == pytest.approx(0.5)
    again = LrSchedule("cosine", total_steps=16)  # a later resume with the same horizon says nothing
    assert again.load_state_dict(longer.state_dict(), step=10) is None
    assert LrSchedule("step", total_steps=16).load_state_dict(short.state_dict(), step=8) is None
    assert math.isclose(LrSchedule("cosine", total_steps=8).factor(3, 1), 0.5 * (1 + math.cos(math.pi * 2 / 8)))
