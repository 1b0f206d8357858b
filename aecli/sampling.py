"""`aecli sample`: load a finished run's best checkpoint and write a grid of images.

    mode=prior        samples from the model's prior (one row per class for a conditional model)
    mode=interpolate  each row decodes (1 - t) z_a + t z_b, t = 0 .. 1, between the codes of two test images
    mode=traverse     each row moves one latent dimension of a test image's code across its range
"""

from __future__ import annotations

from pathlib import Path

import torch

from aecli.errors import AecliError
from aecli.plots import save_grid
from aecli.rundir import RunDir

MODES = ("prior", "interpolate", "traverse")
MAX_IMAGES = 1024  # one grid: 32 x 32 images at most (n=100000 once made a 9482x9512 PNG)
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
STEPS = 8  # images per row of an interpolation or traversal
RANGE_IMAGES = 1000  # test images whose codes set each latent dimension's traversal range


@torch.no_grad()
def draw_samples(model, n: int, seed: int, label: int | None = None) -> tuple[torch.Tensor, int]:
    """n images from the model's prior and the grid's row length.

    A conditional model draws `label` when given, else one row per class (n rounded to whole rows).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    if not model.conditional:
        if label is not None:
            raise AecliError(f"label={label} needs a conditional model (cvae); this run's model is {model.name}")
        return model.sample(n, generator=generator), max(1, int(n ** 0.5))
    if label is not None:
        check_label(label, model.n_classes)
        y = torch.full((n,), label, device=device, dtype=torch.long)
        return model.sample(n, y=y, generator=generator), max(1, int(n ** 0.5))
    per_class = max(1, n // model.n_classes)
    y = torch.arange(model.n_classes, device=device).repeat_interleave(per_class)
    return model.sample(len(y), y=y, generator=generator), per_class


def pick_pairs(y: torch.Tensor, rows: int, conditional: bool,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (a, b) of `rows` random pairs; b has a's label when the model is conditional (one y per row)."""
    perm = torch.randperm(len(y), generator=generator, device=generator.device).to(y.device)
    a, rest = perm[:rows], perm[rows:]
    if not conditional:
        return a, rest[:rows]
    b = torch.stack([rest[(y[rest] == y[i]).nonzero()[0, 0]] for i in a])
    return a, b


@torch.no_grad()
def interpolation_images(model, x: torch.Tensor, y: torch.Tensor, rows: int, seed: int,
                         steps: int = STEPS) -> torch.Tensor:
    """rows x steps images: row r decodes (1 - t) f(x_a) + t f(x_b) for t = 0, 1/(steps-1), .., 1, for a random
    pair (a, b) of the images x (of the same label for a conditional model, which decodes with that label)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    a, b = pick_pairs(y, min(rows, len(y) // 2), model.conditional, g)
    t = torch.linspace(0, 1, steps, device=x.device)[None, :, None]
    z_a, z_b = model.encode(x[a], y[a]), model.encode(x[b], y[b])
    z = ((1 - t) * z_a[:, None] + t * z_b[:, None]).flatten(0, 1)
    return model.mean_image(model.decode(z, y[a].repeat_interleave(steps)))


@torch.no_grad()
def traversal_images(model, x: torch.Tensor, y: torch.Tensor, rows: int, seed: int,
                     steps: int = STEPS) -> torch.Tensor:
    """rows x steps images: the code of one random image x_i with dimension j = row set to `steps` values
    from the 2nd to the 98th percentile of that dimension over the codes of x (so the range fits any model)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    i = torch.randint(len(x), (1,), generator=g, device=x.device).to(y.device)
    codes = model.encode(x[:RANGE_IMAGES], y[:RANGE_IMAGES])
    lo, hi = codes.quantile(0.02, dim=0), codes.quantile(0.98, dim=0)
    rows = min(rows, codes.shape[1])
    z = model.encode(x[i], y[i]).repeat(rows * steps, 1)
    for j in range(rows):
        z[j * steps:(j + 1) * steps, j] = torch.linspace(lo[j].item(), hi[j].item(), steps, device=z.device)
    return model.mean_image(model.decode(z, y[i].repeat(rows * steps)))


def unused(path: Path) -> Path:
    """`path`, or `path` with _1, _2, ... before its extension: a name no file has yet."""
    k, candidate = 0, path
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
    return candidate


def check_label(label: int, n_classes: int) -> None:
    if not 0 <= label < n_classes:
        raise AecliError(f"label={label} is out of range: allowed 0..{n_classes - 1}")


def test_images(ckpt: dict, device: torch.device, label: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test images (float in [0, 1]) and labels on the device, only `label`'s when given."""
    from aecli.runs import load_run_data

    test = load_run_data(ckpt, device).test
    x, y = test.batch(torch.arange(len(test), device=device))
    if label is not None:
        if y is None:
            raise AecliError(f"label={label} needs labelled test images, and this run's data set has none")
        check_label(label, int(y.max()) + 1)
        x, y = x[y == label], y[y == label]
    if y is None:
        y = torch.zeros(len(x), dtype=torch.long, device=device)  # an unlabeled set: the pairs need no classes
    return x, y


def sample_command(run: str, n: int = 64, out: str | None = None, seed: int = 0,
                   label: int | None = None, device: str = "auto", mode: str = "prior") -> Path:
    """Write a grid of n images: prior samples, interpolations or traversals (n // 8 rows of 8; see the module doc).
    `out` is the file to write (its extension says the image type); without it the grid goes into the run's
    images/ folder under a name that never replaces an earlier grid."""
    if not 1 <= n <= MAX_IMAGES:
        raise AecliError(f"n={n} is not allowed: one grid holds 1 to {MAX_IMAGES} images")
    if mode not in MODES:
        raise AecliError(f"mode={mode!r} is not allowed: mode must be one of {', '.join(MODES)}")
    if out is not None and Path(out).suffix.lower() not in IMAGE_TYPES:
        raise AecliError(f"out={out} has no image type: end it with one of {', '.join(IMAGE_TYPES)}")
    from aecli.config import resolve_device
    from aecli.runs import load_trained

    from aecli.plots import class_rows

    model, ckpt, run_dir = load_trained(run, device=device)
    classes = (ckpt.get("data") or {}).get("classes")
    of_class = "" if label is None else f" of class {classes[label] if classes and label < len(classes) else label}"
    if mode == "prior":
        images, nrow = draw_samples(model, n, seed, label)
        name = f"samples_label{label}_seed{seed}.png" if label is not None else f"samples_seed{seed}.png"
        title, rows = f"{model.name}: samples from the prior{of_class}", class_rows(nrow, len(images), classes
                                                                                   if model.conditional else None)
    else:
        x, y = test_images(ckpt, resolve_device(device), label)
        make = interpolation_images if mode == "interpolate" else traversal_images
        images, nrow = make(model, x, y, max(1, n // STEPS), seed), STEPS
        name = f"{mode}{'' if label is None else f'_label{label}'}_seed{seed}.png"
        if mode == "interpolate":
            title, rows = f"{model.name}: from one test image's code to another's{of_class}", None
        else:
            title = f"{model.name}: one test image's code, each row moving one dimension (2nd to 98th percentile)"
            rows = [f"z{j + 1}" for j in range(len(images) // STEPS)]
    target = Path(out) if out else unused(RunDir(run_dir).images / name)
    try:
        return save_grid(images, target, nrow=nrow, title=title, row_labels=rows)
    except OSError as e:
        raise AecliError(f"cannot write {target} ({e.strerror}): choose a writable out=FILE")
