"""Pictures a run writes (image grids, loss curves, the contraction plot) and the report's figures, with one rule
for their axes: a log axis only where the values span two decades or more (`set_scale`), whole epochs on an epoch
axis, one colour per run in every figure of a page (`run_colour`). torch is imported only by the functions that
draw tensors, so the report (aecli/report.py) does not need it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from aecli.rundir import BEST

if TYPE_CHECKING:
    import torch


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile images [N, C, H, W] into one [C, H', W'] image, nrow per row, with `pad` pixels between and around."""
    import torch

    n, c, h, w = images.shape
    ncol = max(1, min(nrow, n))
    rows = max(1, -(-n // ncol))  # no images: one empty cell
    grid = torch.full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


MIN_CELL = 56  # pixels: images are enlarged (nearest neighbour, a whole factor) until a cell is at least this tall
GRID_FONT = 20  # pixels: a grid's title and row labels, readable where the report shows the grid at its size


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, pad: int = 2, title: str | None = None,
              row_labels: list[str] | None = None) -> Path:
    """Save images [N, C, H, W] in [0, 1] as one image grid (its type from the file name), nrow images per row,
    enlarged to cells of at least MIN_CELL pixels, with a title above it and a label before each row when given
    (PIL only: no torchvision import)."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = images.detach().float().clamp(0, 1).cpu()
    scale = max(1, -(-MIN_CELL // images.shape[2]))
    images = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    grid = make_grid(images, nrow=nrow, pad=pad * scale)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    colour = pixels.shape[0] != 1
    picture = Image.fromarray((pixels.permute(1, 2, 0) if colour else pixels[0]).numpy(), mode="RGB" if colour else "L")
    if title or row_labels:
        font = ImageFont.load_default(size=GRID_FONT)
        left = 8 + max((int(font.getlength(t)) for t in row_labels or [""]), default=0) if row_labels else 0
        top = GRID_FONT + 12 if title else 0
        canvas = Image.new(picture.mode, (picture.width + left, picture.height + top), 255 if not colour else "white")
        canvas.paste(picture, (left, top))
        draw = ImageDraw.Draw(canvas)
        ink = 0 if not colour else "black"
        if title:
            draw.text((4, 4), title, fill=ink, font=font)
        cell = images.shape[2] + pad * scale
        for r, label in enumerate(row_labels or []):
            draw.text((4, top + pad * scale + r * cell + (images.shape[2] - GRID_FONT) // 2), label, fill=ink,
                      font=font)
        picture = canvas
    picture.save(path)
    return path


def recon_pairs(inputs: torch.Tensor, recons: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Interleave rows: each row of inputs directly above the row of their reconstructions. Fewer than `per_row`
    inputs (a tiny validation split) make one row, filled up with blank cells."""
    import torch

    if 0 < inputs.shape[0] < per_row:
        blank = torch.ones(per_row - inputs.shape[0], *inputs.shape[1:], dtype=inputs.dtype, device=inputs.device)
        inputs, recons = torch.cat([inputs, blank]), torch.cat([recons, blank.to(recons.dtype)])
    n = (inputs.shape[0] // per_row) * per_row
    a = inputs[:n].reshape(-1, per_row, *inputs.shape[1:])
    b = recons[:n].reshape(-1, per_row, *recons.shape[1:])
    return torch.stack([a, b], dim=1).reshape(-1, *inputs.shape[1:])


def recon_labels(n_images: int, per_row: int = 8) -> list[str]:
    """The row labels of a recon_pairs grid: input, reconstruction, input, ..."""
    return ["input", "reconstruction"] * (n_images // per_row)


def class_rows(nrow: int, n_images: int, classes: list[str] | None) -> list[str] | None:
    """Row labels for a grid drawn one row per class (a cvae's samples), else None."""
    if not classes or n_images // nrow != len(classes):
        return None
    return [f"class {c}" for c in classes]


def plot_losses(rows: list[dict], path: Path, title: str = "", units: str = "nats per image",
                best_epoch: int | None = None) -> Path:
    """Training and validation loss per epoch (and val_recon), from metrics rows: every epoch, the best one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, style in (("train_loss", "-o"), ("val_loss", "-s"), ("val_recon", "--")):
        if rows and key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], style, label=key, markersize=3)
    if best_epoch is not None and any(r["epoch"] == best_epoch for r in rows):
        best = next(r for r in rows if r["epoch"] == best_epoch)
        ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
        ax.plot([best_epoch], [best["val_loss"]], "*", color="black", markersize=10,
                label=f"{BEST} (epoch {best_epoch})")
    epoch_axis(ax)
    set_scale(ax, "y", [r[key] for r in rows for key in ("train_loss", "val_loss", "val_recon") if key in r])
    ax.set_ylabel(units)
    return finish(fig, ax, title, path)


def plot_code_scatter(points: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path,
                      title: str = "", axes: tuple[str, str] = ("z1", "z2")) -> Path:
    """A 2-D scatter of codes [N, 2] (or [N, 1], drawn at height 0) coloured by class, one legend entry per class."""
    import torch

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p = points.detach().float().cpu()
    p = torch.cat([p, torch.zeros(len(p), 1)], 1) if p.shape[1] == 1 else p
    y = labels.cpu()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(classes):
        m = y == c
        ax.scatter(p[m, 0], p[m, 1], s=3, alpha=0.6, color=cmap(c % 10), label=name)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend(markerscale=4, fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def filter_images(weight: torch.Tensor, image_shape, n: int = 100) -> torch.Tensor:
    """The first n rows of a first-layer weight [units, inputs] as images [n, C, H, W] in [0, 1]: each row's first
    C*H*W inputs (a condition joined after the pixels is left out), scaled by its largest |w| so that grey is 0,
    white positive, black negative (the filters of Ng's notes and Vincent et al. 2010, Fig. 6)."""
    size = 1
    for d in image_shape:
        size *= int(d)
    w = weight.detach().float().cpu()[:n, :size]
    w = 0.5 + 0.5 * w / w.abs().amax(1, keepdim=True).clamp(min=1e-12)
    return w.view(-1, *image_shape)


def plot_contraction(curves: dict, path: Path, title: str = "") -> Path:
    """Contraction curves, {label: (radii, ratios)}: mean ||f(x + e) - f(x)|| / ||e|| against ||e|| (Rifai et al.
    2011, Fig. 3), one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, (radii, ratios) in curves.items():
        ax.plot(radii, ratios, "-o", label=label, markersize=3)
    ax.set_xlabel("||e||, the distance from a test image")
    ax.set_ylabel("mean ||f(x + e) - f(x)|| / ||e||")
    set_scale(ax, "y", [float(v) for _, ratios in curves.values() for v in ratios])
    return finish(fig, ax, title, path)


def finish(fig, ax, title: str, path: Path) -> Path:
    """A line plot's title, grid and legend; written to `path` and closed."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- the report's figures -----------------------------------------------------------------------------
FONT = 11  # points: titles, labels and ticks of the report's figures, readable at the size the page shows them


def spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) / min(positive) >= 100


def set_scale(ax, axis: str, values: list[float]) -> None:
    """The one rule for every figure's axis: log where the values span two decades or more (symlog when one of them
    is 0), linear otherwise (a contraction ratio that moves by 5% gets a linear axis, and no zig-zag of log ticks)."""
    if not spans_decades(values) or any(v < 0 for v in values):
        return
    smallest = min(v for v in values if v > 0)
    scale = (ax.set_xscale if axis == "x" else ax.set_yscale)
    scale("log") if min(values) > 0 else scale("symlog", linthresh=smallest)


def epoch_axis(ax) -> None:
    """An x axis of epochs: whole numbers only (2 epochs have ticks 1 and 2, not 1.0, 1.2, ...)."""
    import matplotlib.ticker

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def run_colour(i: int):
    """The colour of the i-th run of a page, the same in every figure."""
    import matplotlib

    return matplotlib.colormaps["tab10" if i < 10 else "tab20"](i % 20)


def figure(panels: int, width: float = 4.6, per_row: int = 3):
    """A figure of `panels` axes, at most `per_row` side by side (the rest below), in the report's font size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(panels, per_row)
    nrows = -(-panels // ncols)
    with plt.rc_context({"font.size": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT}):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows), squeeze=False)
    axes = list(axes.flat)
    for ax in axes[panels:]:
        ax.remove()
    for ax in axes[:panels]:
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=FONT - 1)
    return fig, axes[:panels]


def legend(ax, most: int = 12) -> None:
    """The legend of an axis, its first `most` entries (the count of the others said in its title)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 1 or (labels and labels[0] != "runs"):
        ax.legend(handles[:most], labels[:most], fontsize=FONT - 2, title=f"{len(labels) - most} more not listed"
                  if len(labels) > most else None, title_fontsize=FONT - 2)


def png_bytes(fig) -> bytes:
    """A figure as a PNG (a 256-colour one when that is smaller), closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return palette(buffer.getvalue())


def palette(png: bytes) -> bytes:
    """A plot (a colour PNG) as a 256-colour PNG, when that is smaller: a scatter of 10,000 test codes shrinks
    about threefold and looks the same. Grey-level image grids are kept as written."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.mode not in ("RGB", "RGBA"):
        return png
    buffer = io.BytesIO()
    image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(png) else png
