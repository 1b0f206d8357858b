"""Pictures a run writes: image grids (PNG) and loss curves."""

from __future__ import annotations

from pathlib import Path

import torch


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, pad: int = 2) -> Path:
    """Save images [N, 1, 28, 28] in [0, 1] as one PNG grid, nrow images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow, padding=pad, pad_value=1.0)
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
