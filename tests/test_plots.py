"""The pictures' rules (aecli/plots.py): one rule for log axes, whole epochs, one colour per run, readable grids."""

from __future__ import annotations

import torch

from aecli import plots


def test_one_rule_for_log_axes():
    """Log only where the values span two decades (symlog with a 0); a 5% range stays linear."""
    assert plots.spans_decades([0.01, 1]) and not plots.spans_decades([1, 10]) and not plots.spans_decades([0, 5])
    fig, (ax,) = plots.figure(1)
    plots.set_scale(ax, "y", [0.95, 0.97, 1.0])
    assert ax.get_yscale() == "linear"
    plots.set_scale(ax, "x", [0, 0.1, 10])
    assert ax.get_xscale() == "symlog"


def test_a_contraction_curve_over_a_small_range_is_linear(tmp_path):
    """The contraction ratio moved by 5% on a log axis, which zig-zagged its ticks: linear there, log over decades."""
    import matplotlib.pyplot as plt

    seen = []
    real = plots.finish
    plots.finish = lambda fig, ax, title, path: seen.append(ax.get_yscale()) or real(fig, ax, title, path)
    try:
        plots.plot_contraction({"cae": ([0.1, 0.5, 1.0], [0.50, 0.51, 0.525])}, tmp_path / "c.png")
        plots.plot_contraction({"cae": ([0.1, 0.5, 1.0], [5.0, 0.5, 0.01])}, tmp_path / "d.png")
    finally:
        plots.finish = real
    assert seen == ["linear", "log"] and (tmp_path / "c.png").is_file()
    plt.close("all")


def test_loss_curves_follow_the_same_rule_and_whole_epochs(tmp_path):
    rows = [{"epoch": e, "train_loss": 200.0 - e, "val_loss": 201.0 - e, "val_recon": 199.0 - e} for e in (1, 2)]
    seen = []
    real = plots.finish

    def record(fig, ax, title, path):
        seen.append((ax.get_yscale(), [t for t in ax.get_xticks() if 1 <= t <= 2]))
        return real(fig, ax, title, path)

    plots.finish = record
    try:
        plots.plot_losses(rows, tmp_path / "loss.png", best_epoch=2)
    finally:
        plots.finish = real
    (scale, ticks), = seen
    assert scale == "linear" and ticks and all(float(t).is_integer() for t in ticks)


def test_each_run_keeps_its_colour():
    assert plots.run_colour(3) == plots.run_colour(3) and plots.run_colour(0) != plots.run_colour(1)


def test_grid_labels_are_readable(tmp_path):
    """The title and row labels of a grid are GRID_FONT pixels tall (14 was unreadable in the report)."""
    from PIL import Image

    path = plots.save_grid(torch.rand(16, 1, 28, 28), tmp_path / "g.png", title="t", row_labels=["input", "recon"])
    plain = plots.save_grid(torch.rand(16, 1, 28, 28), tmp_path / "p.png")
    assert plots.GRID_FONT >= 18
    assert Image.open(path).height - Image.open(plain).height == plots.GRID_FONT + 12
