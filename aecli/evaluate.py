"""`aecli eval`: the same test-set numbers for every model, written to `eval.json`, a table, and the pictures.

Which metrics a model gets follows from what its class declares it can do (aecli/models/base.py), never from
its name:

    every model                 recon_bce (Bernoulli NLL of the mean reconstruction, nats per image),
                                recon_mse (squared error summed over the pixels, per image), psnr (dB);
                                probe_acc and knn_acc on the codes, beside pixel_probe_acc and pixel_knn_acc
                                (the same on raw pixels: the floor a representation must beat);
                                with eval.finetune_epochs, finetune_acc of the encoder fine-tuned with a softmax
                                layer (aecli/finetune.py), beside scratch_acc (the same network from a random start);
                                jacobian_fro, the mean ||J_f(x)||_F of the evaluated code (model.representation)
    elbo (vae, cvae)            elbo and iw_bound (Burda et al. 2015) with eval.iw_samples samples, nats per image
    denoising (dae)             denoised_psnr, of the reconstruction of a corrupted image, beside noisy_psnr
    sparse_code (sae)           mean_activation of the code, off_fraction (units whose mean is < sparse_threshold)
    code_prior native           mmd: MMD^2 between the aggregate posterior and the prior (vae, cvae, aae)
    (every model samples)       frechet: Fréchet distance of samples to test images in the classifier's features
                                (aecli.classifier), beside frechet_floor, the training images' distance
    conditional (cvae)          label_acc: the classifier's accuracy on samples drawn for each label (the mean;
                                label_acc_per_class lists them)

A data set without labels gets no probe, no kNN and no classifier: `skipped` in eval.json names each metric left
out and why.

Costly metrics use the first N test images (conf/eval/default.yaml). The pixel floors and the classifier
are computed once per data set and cached. `aecli train` runs the same evaluation on its best checkpoint
when `eval.at_end` is true, so `aecli eval run=...` afterwards gives the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from pathlib import Path

import torch
from omegaconf import OmegaConf

from aecli import metrics, schema
from aecli.checkpoint import find_checkpoint
from aecli.classifier import VERSION as CLASSIFIER_VERSION
from aecli.classifier import CNN_VERSION, cache_folder, cached_json, load_classifier, load_paper_classifier
from aecli.config import resolve_device
from aecli.data import Data, Split
from aecli.errors import AecliError
from aecli.finetune import finetune
from aecli.metric_names import DESCRIPTIONS
from aecli.models.base import bernoulli_nll_of_probs
from aecli.parzen import parzen_log_likelihood
from aecli.rundir import BEST, EVAL, RunDir
from aecli.plots import (class_rows, filter_images, plot_code_scatter, plot_contraction, recon_labels, recon_pairs,
                         save_grid)
from aecli.progress import StageProgress
from aecli.runs import load_run_data, load_trained
from aecli.sampling import STEPS, draw_samples, interpolation_images
from aecli.settings import EvalOptions as EvalSettings

log = logging.getLogger("aecli")

BATCH = 1000  # images per forward pass
IW_ROWS = 5000  # decoder rows per pass of the importance-weighted bound (images x samples): fastest on a CPU
HEADLINE = ("recon_bce", "psnr", "probe_acc", "knn_acc", "iw_bound", "frechet", "parzen_ll", "finetune_acc")
STANDARD_ERRORS = {"parzen_ll": "parzen_se"}  # shown as value ± its standard error over the test images


#: eval.protocol=paper: the literature's protocol (docs/eval.md). It changes the keys a run left at their fast default
#: (conf/eval/default.yaml) to these values; a key set to anything else keeps it, and a key given to `aecli eval`
#: (`iw_samples=1000`) wins. null = every image of the split.
PAPER = {"test_images": None, "probe_train_images": None, "iw_samples": 5000, "iw_images": None, "iw_chunk": 1000,
         "frechet_images": 10000, "parzen_samples": 10000, "classifier": "cnn"}


def eval_settings(eval_cfg=None, **overrides) -> EvalSettings:
    """The declared defaults (aecli/settings.py, documented in conf/eval/default.yaml), updated by a run's `eval`
    config, then by PAPER under protocol=paper, then by `overrides` (None = keep); checked."""
    given = {k: v for k, v in overrides.items() if v is not None}
    default = schema.defaults(EvalSettings)
    merged = {**default, **(OmegaConf.to_container(OmegaConf.create(eval_cfg), resolve=True) if eval_cfg else {})}
    if given.get("protocol", merged.get("protocol")) == "paper":
        merged.update({k: v for k, v in PAPER.items() if merged.get(k) == default.get(k)})
    return schema.instance(EvalSettings, schema.check(EvalSettings, {**merged, **given}, "eval"))


# -- passes over a split --------------------------------------------------------------------------------
def chunks(n: int, device: torch.device, batch: int = BATCH):
    for start in range(0, n, batch):
        yield torch.arange(start, min(start + batch, n), device=device)


@torch.no_grad()
def encode_split(model, split: Split, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The label-free codes (`model.representation`) and the labels (None without) of the first n images."""
    zs = [model.representation(split.batch(idx)[0]).float() for idx in chunks(n, split.images.device)]
    return torch.cat(zs), None if split.labels is None else split.labels[:n]


@torch.no_grad()
def posterior_samples(model, split: Split, n: int, generator: torch.Generator) -> torch.Tensor:
    """One draw z ~ q(z|x) for each of the first n images: samples of the aggregate posterior q(z)."""
    out = []
    for idx in chunks(n, split.images.device):
        x, y = split.batch(idx)
        out.append(model.sample_posterior(x, y, generator=generator).float())
    return torch.cat(out)


@torch.no_grad()
def reconstruction(model, split: Split, n: int, corrupt=None) -> dict[str, float]:
    """recon_bce and recon_mse per image and psnr of the mean reconstruction of the first n images;
    with `corrupt`, of the reconstruction of corrupt(x) (still against the clean x), plus noisy_psnr."""
    bce = sse = noisy_sse = 0.0
    for idx in chunks(n, split.images.device):
        x, y = split.batch(idx)
        x_in = x if corrupt is None else corrupt(x)
        x_hat = model.reconstruct(x_in, y)
        bce += bernoulli_nll_of_probs(x_hat, x).sum().item()
        sse += metrics.squared_error(x_hat, x).sum().item()
        noisy_sse += metrics.squared_error(x_in, x).sum().item()
    pixels = n * x[0].numel()
    out = {"recon_bce": bce / n, "recon_mse": sse / n, "psnr": metrics.psnr(sse / pixels)}
    if corrupt is not None:
        out = {"denoised_psnr": out["psnr"], "noisy_psnr": metrics.psnr(noisy_sse / pixels)}
    return out


@torch.no_grad()
def likelihood_bounds(model, split: Split, n: int, k: int, chunk: int, progress=None) -> dict[str, float]:
    """The ELBO and the k-sample importance-weighted bound on log p(x), averaged over the first n images (nats).

    Both come from the same k log-weights per image (`model.elbo_terms`, drawn `chunk` at a time), so
    iw_bound >= elbo image by image (see metrics.iw_bound). Each pass decodes about IW_ROWS codes: `chunk` samples
    of IW_ROWS / chunk images (the decoder's matrix products stay large, its outputs stay in the cache).
    `progress` (a StageProgress) advances by the images done.
    """
    elbo = iw = 0.0
    for idx in chunks(n, split.images.device, max(1, IW_ROWS // min(chunk, k))):
        x, y = split.batch(idx)
        log_w = torch.cat([model.elbo_terms(x, y, min(chunk, k - done)) for done in range(0, k, chunk)])
        elbo += metrics.elbo(log_w).sum().item()
        iw += metrics.iw_bound(log_w).sum().item()
        if progress is not None:
            progress.advance(len(idx))
    return {"elbo": elbo / n, "iw_bound": iw / n}


def encoder_jacobian(model, split: Split, n: int) -> float:
    """Mean ||J_f(x)||_F over the first n images, f = model.representation (the Jacobian with respect to x)."""
    x, _ = split.batch(torch.arange(n, device=split.images.device))
    with torch.enable_grad():
        return metrics.jacobian_frobenius(lambda v, _: model.representation(v), x).mean().item()


CONTRACTION_RADII = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0)  # ||e||; a test image's norm is about 9


@torch.no_grad()
def contraction_curve(model, split: Split, n: int, generator: torch.Generator) -> list[float]:
    """Rifai et al. 2011's contraction curve (Sec. 5.2, Fig. 3): for each radius r of CONTRACTION_RADII the mean over
    the first n images of ||f(x + e) - f(x)|| / ||e||, e uniform on the sphere of radius r (isotropic), f the evaluated
    code (model.representation)."""
    x, _ = split.batch(torch.arange(n, device=split.images.device))
    return metrics.contraction_ratios(model.representation, x, CONTRACTION_RADII, generator)


def eval_classifier(data: Data, device: torch.device, s: EvalSettings):
    """The feature classifier of eval.classifier, its test accuracy and its name in the floors' cache key."""
    if s.classifier == "cnn":
        net, acc = load_paper_classifier(data, device, s.cache_dir)
        return net, acc, f"cnn-v{CNN_VERSION}"
    net, acc = load_classifier(data, device, s.classifier_epochs, s.cache_dir)
    return net, acc, f"v{CLASSIFIER_VERSION}e{s.classifier_epochs}"


@torch.no_grad()
def parzen(model, data: Data, n_samples: int, n_test: int, generator: torch.Generator) -> dict[str, float]:
    """The Parzen-window log-likelihood of the test images under n_samples samples (aecli/parzen.py), the window
    chosen on the validation images."""
    device = data.test.images.device
    samples = draw(model, n_samples, generator).flatten(1)
    val = data.val.batch(torch.arange(len(data.val), device=device))[0]
    test = data.test.batch(torch.arange(n_test, device=device))[0]
    return parzen_log_likelihood(samples, val, test)


@torch.no_grad()
def features(net, images: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    return torch.cat([net.features(images[i:i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def draw(model, n: int, generator: torch.Generator, y: torch.Tensor | None = None) -> torch.Tensor:
    """n samples from the model's prior, BATCH at a time (with labels y for a conditional model)."""
    out = []
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        out.append(model.sample(m, y=None if y is None else y[start:start + m], generator=generator))
    return torch.cat(out)


def fine_tuned(model, data: Data, s: EvalSettings, seed: int, cache: Path) -> dict:
    """finetune_acc (and the epoch kept) of the encoder fine-tuned with a softmax layer (aecli/finetune.py), and
    scratch_acc, the same network trained from a random start: cached per data set, architecture and setting."""
    runs = dict(train=data.train_all, val=data.val, test=data.test, n_classes=data.n_classes,
                epochs=s.finetune_epochs, lr=s.finetune_lr, seed=seed)
    with StageProgress(f"eval: fine-tuning the encoder with a softmax layer ({s.finetune_epochs} epochs of "
                       f"{len(data.train_all):,} images)"):
        tuned = finetune(model, **runs)
    # the network from a random start is the model's class, net, options and parameter shapes (the same for two
    # runs that differ only in lambda or in their training)
    options = {name: getattr(model, name, None) for name in schema.defaults(model.Options)}
    shapes = ",".join("x".join(map(str, p.shape)) for p in model.parameters())
    network = f"{type(model).__name__} {model.net_description} {sorted(options.items())} {shapes}"
    key = (f"{data.key} scratch {type(model).__name__} {zlib.crc32(network.encode()):08x} "
           f"train={len(data.train_all)} epochs={s.finetune_epochs} lr={s.finetune_lr} seed={seed}")

    def from_scratch() -> dict[str, float]:
        with StageProgress(f"eval: the same network from a random start, once (cached in {cache / 'floors.json'})"):
            return {"scratch_acc": finetune(model, **runs, from_scratch=True)["acc"]}

    return {"finetune_acc": tuned["acc"], "finetune_epoch": tuned["epoch"],
            **cached_json(cache / "floors.json", key, from_scratch)}


# -- the evaluation ---------------------------------------------------------------------------------------
def pixel_floors(data: Data, s: EvalSettings, n_train: int, n_test: int, n_f: int, classifier) -> dict[str, float]:
    """Probe and kNN accuracy on raw pixels, and the Fréchet distance of n_f training images to n_f test images."""
    device = data.test.images.device
    x_train, y_train = data.train_all.batch(torch.arange(n_train, device=device))
    x_test, y_test = data.test.batch(torch.arange(n_test, device=device))
    first = torch.arange(n_f, device=device)
    frechet_floor = (metrics.frechet_distance(features(classifier, data.train_all.batch(first)[0]),
                                              features(classifier, data.test.batch(first)[0]))
                     if n_f >= 2 else None)  # a covariance needs two images
    return {"pixel_probe_acc": metrics.probe_accuracy(x_train.flatten(1), y_train, x_test.flatten(1), y_test,
                                                      s.probe_steps, s.probe_l2, data.n_classes),
            "pixel_knn_acc": metrics.knn_accuracy(x_train.flatten(1), y_train, x_test.flatten(1), y_test, s.knn_k,
                                                  data.n_classes),
            "frechet_floor": frechet_floor}


NEEDS_LABELS = ("probe_acc", "knn_acc", "pixel_probe_acc", "pixel_knn_acc", "frechet", "frechet_floor",
                "classifier_acc", "label_acc")


def evaluate(model, data: Data, s: EvalSettings, seed: int = 0) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """Every metric the model supports (see the module doc): a flat dict of numbers, and the test codes and labels."""
    model.eval()
    data = data.evaluation()  # data.binarize=dynamic: the fixed draw of the training split
    device = data.test.images.device
    torch.manual_seed(seed)  # elbo_terms and corrupt draw from the global generator
    generator = torch.Generator(device=device).manual_seed(seed)
    n_test = min(s.test_images or len(data.test), len(data.test))
    n_train = min(s.probe_train_images or len(data.train_all), len(data.train_all))
    n_f = min(s.frechet_images, len(data.train_all), len(data.test))  # as many samples as test (and train) images
    out: dict = {"protocol": s.protocol, "binarize": data.binarize, "test_images": n_test}

    with StageProgress(f"eval: reconstructions and codes of {n_test:,} test images"):
        out.update(reconstruction(model, data.test, n_test))
        z_test, y_test = encode_split(model, data.test, n_test)
    n_jac, n_con = min(s.jacobian_images, n_test), min(s.contraction_images, n_test)
    with StageProgress(f"eval: encoder Jacobian ({n_jac:,} images) and contraction curve ({n_con:,})"):
        out["jacobian_fro"] = encoder_jacobian(model, data.test, n_jac)
        out["contraction_radii"] = list(CONTRACTION_RADII)
        out["contraction"] = contraction_curve(model, data.test, n_con,
                                               torch.Generator(device=device).manual_seed(seed))
    if model.elbo:
        n_iw = min(s.iw_images or len(data.test), len(data.test))
        start = time.perf_counter()
        with StageProgress(f"eval: ELBO and IW bound ({s.iw_samples:,} samples of each image)", total=n_iw) as bar:
            out.update(likelihood_bounds(model, data.test, n_iw, s.iw_samples, s.iw_chunk, bar))
        out.update(iw_samples=s.iw_samples, iw_images=n_iw, iw_seconds=round(time.perf_counter() - start, 1))
    if model.denoising:
        with StageProgress(f"eval: denoising of {n_test:,} corrupted test images"):
            out.update(reconstruction(model, data.test, n_test, corrupt=model.corrupt))
    if model.sparse_code:
        out["mean_activation"], out["off_fraction"] = metrics.activation_stats(z_test, s.sparse_threshold)
    skipped: dict[str, str] = {}
    if model.code_prior == "native":  # q(z) = E_x q(z|x), sampled one z per test image, against draws from p(z)
        m = min(s.mmd_images, n_test)
        if m < 2:  # the unbiased estimate leaves each sample's pair with itself out: it needs two
            skipped["mmd"] = f"MMD needs at least 2 test images; the data set {data.name} has {n_test}"
        else:
            with torch.no_grad(), StageProgress(f"eval: MMD of {m:,} posterior samples to the prior"):
                out["mmd"] = metrics.mmd_gaussian(posterior_samples(model, data.test, m, generator),
                                                  model.sample_prior(m, generator=generator).float())
    if s.parzen_samples:
        with StageProgress(f"eval: Parzen window of {s.parzen_samples:,} samples"):
            out.update(parzen(model, data, s.parzen_samples, n_test,
                              torch.Generator(device=device).manual_seed(seed)))
    if not data.labeled:
        labelled = NEEDS_LABELS + (("finetune_acc", "scratch_acc") if s.finetune_epochs else ())
        out["skipped"] = {**skipped, **{k: f"the data set {data.name} has no labels" for k in labelled}}
        return out, (z_test, torch.zeros(len(z_test), dtype=torch.long, device=device))

    with StageProgress(f"eval: linear probe and {s.knn_k}-NN on the codes of {n_train:,} training images"):
        z_train, y_train = encode_split(model, data.train_all, n_train)
        out["probe_train_images"] = n_train
        out["probe_acc"] = metrics.probe_accuracy(z_train, y_train, z_test, y_test, s.probe_steps, s.probe_l2,
                                                  data.n_classes)
        out["knn_acc"] = metrics.knn_accuracy(z_train, y_train, z_test, y_test, s.knn_k, data.n_classes)
    folder = cache_folder(s.cache_dir)
    if s.finetune_epochs:
        out.update(fine_tuned(model, data, s, seed, folder))
    classifier, out["classifier_acc"], out["classifier"] = eval_classifier(data, device, s)
    key = (f"{data.key} train={n_train} test={n_test} k={s.knn_k} steps={s.probe_steps} l2={s.probe_l2} "
           f"frechet={n_f} classifier={out['classifier']}")

    def floors_once() -> dict[str, float]:
        with StageProgress(f"eval: the pixel floors, once per data set and size (cached in {folder / 'floors.json'})"):
            return pixel_floors(data, s, n_train, n_test, n_f, classifier)

    floors = cached_json(folder / "floors.json", key, floors_once)
    out.update({k: v for k, v in floors.items() if k != "frechet_floor"})

    labels = ", label accuracy" if model.conditional else ""
    with StageProgress(f"eval: Fréchet distance of {n_f:,} samples{labels}"):
        x_f, y_f = data.test.batch(torch.arange(n_f, device=device))
        if n_f >= 2:
            samples = draw(model, n_f, generator, y_f if model.conditional else None)
            out["frechet"] = metrics.frechet_distance(features(classifier, samples), features(classifier, x_f))
            out["frechet_floor"] = floors["frechet_floor"]
        else:  # the Gaussians of the features need a covariance, of two images at least
            skipped["frechet"] = f"the Fréchet distance needs at least 2 test images; the data set {data.name} has {n_f}"
        if model.conditional:
            per_class = []
            for c in range(data.n_classes):
                y = torch.full((s.label_samples,), c, device=device, dtype=torch.long)
                with torch.no_grad():
                    pred = classifier(draw(model, s.label_samples, generator, y)).argmax(1)
                per_class.append((pred == c).float().mean().item())
            out["label_acc"] = sum(per_class) / data.n_classes
            out["label_acc_per_class"] = per_class
    if skipped:
        out["skipped"] = skipped
    return out, (z_test, y_test)


# -- outputs ----------------------------------------------------------------------------------------------
FLOOR_NAMES = {"pixel_probe_acc": "on pixels", "pixel_knn_acc": "on pixels", "elbo": "ELBO",
               "scratch_acc": "from scratch",
               "noisy_psnr": "noisy input",
               "frechet_floor": "train vs test", "classifier_acc": "on test images"}


def fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def print_table(results: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("reference", justify="right")
    table.add_column("what it is")
    for key, (what, ref) in DESCRIPTIONS.items():
        if key in results:
            reference = f"{fmt(results[ref])} ({FLOOR_NAMES[ref]})" if ref in results else ""
            error = f" ± {fmt(results[STANDARD_ERRORS[key]])}" if STANDARD_ERRORS.get(key) in results else ""
            table.add_row(key, fmt(results[key]) + error, reference, what)
    Console().print(table)


def headline(results: dict) -> str:
    """The few numbers of a run's final summary line: `recon_bce 97.3, psnr 17.2, ...` (keys with or without test_)."""
    results = {k.removeprefix("test_"): v for k, v in results.items()}
    return ", ".join(f"{k} {fmt(results[k])}" for k in HEADLINE if k in results)


@torch.no_grad()
def write_pictures(model, data: Data, codes: tuple[torch.Tensor, torch.Tensor], run_dir: Path, seed: int) -> None:
    """The code scatter, and test-set reconstruction, interpolation and sample grids (the loss curves are the
    trainer's: every epoch, written when training ends)."""
    images, plots = RunDir(run_dir).images, RunDir(run_dir).plots
    name = f"{model.name} on {data.name}"
    z, y = codes
    axes = ("z1", "z2") if z.shape[1] <= 2 else ("principal component 1 of the codes", "principal component 2")
    plot_code_scatter(metrics.principal_components(z), y, data.classes or ["unlabeled"], plots / "codes.png",
                      title=f"test codes: {name}", axes=axes)
    x, y = data.test.batch(torch.arange(min(32, len(data.test)), device=data.test.images.device))
    pairs = recon_pairs(x, model.reconstruct(x, y))
    save_grid(pairs, images / "eval_recon.png", title=f"{name}: test images and their reconstructions",
              row_labels=recon_labels(len(pairs)))
    x, y = data.test.batch(torch.arange(min(1000, len(data.test)), device=data.test.images.device))
    y = torch.zeros(len(x), dtype=torch.long, device=x.device) if y is None else y
    save_grid(interpolation_images(model, x, y, 8, seed), images / "eval_interpolation.png", nrow=STEPS,
              title=f"{name}: from one test image's code to another's")
    samples, nrow = draw_samples(model, 64, seed)
    save_grid(samples, images / "eval_samples.png", nrow=nrow, title=f"{name}: samples from the prior",
              row_labels=class_rows(nrow, len(samples), data.classes if model.conditional else None))


def first_layer_weight(model) -> torch.Tensor | None:
    """The weight [units, inputs] of the encoder's first layer when it is fully connected (net=mlp), else None."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        return None
    first = next((m for m in encoder.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))), None)
    return first.weight if isinstance(first, torch.nn.Linear) else None


def write_curve_pictures(model, data: Data, results: dict, run_dir: Path) -> None:
    """plots/contraction.png (the contraction curve in `results`) and, for an mlp encoder, plots/filters.png: the
    first layer's weights as images."""
    name = f"{model.name} on {data.name}"
    if "contraction" in results:
        plot_contraction({model.name: (results["contraction_radii"], results["contraction"])},
                         RunDir(run_dir).plots / "contraction.png", title=f"contraction: {name}")
    weight = first_layer_weight(model)
    if weight is not None:
        save_grid(filter_images(weight, data.image_shape), RunDir(run_dir).plots / "filters.png", nrow=10)


def run_eval(run: str | Path, iw_samples: int | None = None, device: str = "auto", seed: int | None = None,
             data: Data | None = None, quiet: bool = False, protocol: str | None = None,
             finetune_epochs: int | None = None) -> dict:
    """Evaluate a run folder's best checkpoint (or a checkpoint file): eval.json, pictures, the table (a one-line
    summary when `quiet`, as in a sweep). `data`: the run's data set already loaded (the end of training), else it
    is loaded. Returns the metrics."""
    start = time.perf_counter()
    model, ckpt, run_dir = load_trained(run, device=device)
    checkpoint = find_checkpoint(str(run), "best")
    cfg = ckpt["config"]
    s = eval_settings(cfg.get("eval"), iw_samples=iw_samples, protocol=protocol, finetune_epochs=finetune_epochs)
    seed = cfg.get("seed", 0) if seed is None else seed
    from aecli.cores import threads_for  # optuna-wiring: num_threads may be auto

    threads = threads_for((cfg.get("trainer") or {}).get("num_threads"))
    if threads:
        torch.set_num_threads(threads)
    data = data if data is not None else load_run_data(ckpt, resolve_device(device))
    results, codes = evaluate(model, data, s, seed)
    if s.pictures:
        with StageProgress("eval: pictures"):
            write_pictures(model, data, codes, run_dir, seed)
            write_curve_pictures(model, data, results, run_dir)
    path = run_dir / eval_file(checkpoint, seed == cfg.get("seed", 0), iw_samples, seed, finetune_epochs)
    record = {"model": model.name, "data": data.name, "checkpoint": str(checkpoint), "seed": seed,
              "code": model.representation_note, **results}
    try:
        path.write_text(json.dumps(record, indent=1) + "\n")
    except OSError as e:
        raise AecliError(f"cannot write {path} ({e.strerror}): the run folder must be writable")
    title = f"{model.name} on {data.name}: test set ({time.perf_counter() - start:.1f}s; {path})"
    if quiet:
        log.info(f"{title}: {headline(results)}")
    else:
        print_table(results, title)
    return {k: v for k, v in results.items() if k != "skipped"}


def eval_file(checkpoint: Path, run_seed: bool, iw_samples: int | None, seed: int,
              finetune_epochs: int | None = None) -> str:
    """eval.json for the run's best checkpoint under the run's own settings; any other checkpoint or settings get a
    file of their own (eval_last_seed3.json, eval_best_seed0_iw5000.json, eval_best_seed0_ft100.json), so no
    evaluation replaces another."""
    if checkpoint.name == BEST and run_seed and iw_samples is None and finetune_epochs is None:
        return EVAL
    return (f"eval_{checkpoint.stem}_seed{seed}" + (f"_iw{iw_samples}" if iw_samples is not None else "")
            + (f"_ft{finetune_epochs}" if finetune_epochs is not None else "") + ".json")


def eval_command(run: str, iw_samples: int | None = None, device: str = "auto", seed: int | None = None,
                 protocol: str | None = None, finetune_epochs: int | None = None) -> dict:
    """`aecli eval run=PATH [iw_samples=N device=... seed=N protocol=fast|paper finetune_epochs=E]`."""
    return run_eval(run, iw_samples=iw_samples, device=device, seed=seed, protocol=protocol,
                    finetune_epochs=finetune_epochs)
