"""Pictures a run writes: image grids (PNG) and loss curves."""

from __future__ import annotations

from pathlib import Path

import torch


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile images [N, C, H, W] into one [C, H', W'] image, nrow per row, with `pad` pixels between and around."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = torch.full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, pad: int = 2) -> Path:
    """Save images [N, 1, 28, 28] in [0, 1] as one PNG grid, nrow images per row (PIL only: no torchvision import)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, pad=pad)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    mode = "L" if pixels.shape[0] == 1 else "RGB"
    array = pixels[0] if mode == "L" else pixels.permute(1, 2, 0)
    Image.fromarray(array.numpy(), mode=mode).save(path)
    return path


def recon_pairs(inputs: torch.Tensor, recons: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Interleave rows: each row of inputs directly above the row of their reconstructions."""
    n = (inputs.shape[0] // per_row) * per_row
    a = inputs[:n].reshape(-1, per_row, *inputs.shape[1:])
    b = recons[:n].reshape(-1, per_row, *recons.shape[1:])
    return torch.stack([a, b], dim=1).reshape(-1, *inputs.shape[1:])


def plot_losses(rows: list[dict], path: Path, title: str = "") -> Path:
    """Training and validation loss per epoch (and val_recon), from metrics rows."""
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
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_code_scatter(points: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path,
                      title: str = "", axes: tuple[str, str] = ("z1", "z2")) -> Path:
    """A 2-D scatter of codes [N, 2] (or [N, 1], drawn at height 0) coloured by class, one legend entry per class."""
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
