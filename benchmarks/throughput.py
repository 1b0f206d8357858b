"""Throughput of aecli's trainer against the seed's own training loop (issue 7), in one process.

    uv run python benchmarks/throughput.py [--quick] [--data-root /tmp/data] [--threads N]

Setup of seed 004 (/work/shared/seeds/004_*.txt): MLP VAE 784-784-784 (encoder hidden [784, 784], latent 64,
LeakyReLU), batch 1024, AdamW lr 1e-3, the MNIST training set.

    (a)  the seed's loop as written there: torchvision MNIST with transforms.ToTensor, DataLoader(shuffle=True),
         its VAE class and loss, `loss.item()` every step (tqdm's display left out)
    (a') the same loop with the data kept as one uint8 tensor, indexed by a random permutation
    (b)  aecli's Trainer.train_epoch on the same model, batch and optimizer (plus one-flag variants)
    (c)  the machine's dense matmul throughput at these shapes: torch.mm [1024, 784] x [784, 784]

Printed: images/s for every variant, b/a, and model-FLOP utilization = images/s * 6 * (weights of the linear
layers) / (c) (forward 2 FLOPs per weight and image, backward 4). Then the same for cae (exact Jacobian and
the estimate) and aae, and the step cost of cae against a plain ae at latent_dim 16 on the default mlp net.

Every variant is timed in steady state: one warm-up call (excluded), then interleaved rounds of a few steps
each (6 steps x 5 rounds; --quick: 3 x 2); a variant's time is its best round, so a busy machine (other
processes on the two cores) disturbs the ratios as little as possible. The full run takes ~3-5 minutes here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCH = 1024
LATENT = 64
SEED_HIDDEN = "[784,784]"


# -- (a) the seed's own code (seed 004), reproduced faithfully ---------------------------------------------------
class SeedVAE(nn.Module):
    def __init__(self, in_features, latent_size, y_size=0):
        super(SeedVAE, self).__init__()
        self.latent_size = latent_size
        self.encoder_forward = nn.Sequential(
            nn.Linear(in_features + y_size, in_features),
            nn.LeakyReLU(),
            nn.Linear(in_features, in_features),
            nn.LeakyReLU(),
            nn.Linear(in_features, self.latent_size * 2)
        )
        self.decoder_forward = nn.Sequential(
            nn.Linear(self.latent_size + y_size, in_features),
            nn.LeakyReLU(),
            nn.Linear(in_features, in_features),
            nn.LeakyReLU(),
            nn.Linear(in_features, in_features),
            nn.Sigmoid()
        )

    def encoder(self, X):
        out = self.encoder_forward(X)
        mu = out[:, :self.latent_size]
        log_var = out[:, self.latent_size:]
        return mu, log_var

    def decoder(self, z):
        mu_prime = self.decoder_forward(z)
        return mu_prime

    def reparameterization(self, mu, log_var):
        epsilon = torch.randn_like(log_var)
        z = mu + epsilon * torch.sqrt(log_var.exp())
        return z

    def loss(self, X, mu_prime, mu, log_var):
        reconstruction_loss = torch.mean(torch.square(X - mu_prime).sum(dim=1))
        latent_loss = torch.mean(0.5 * (log_var.exp() + torch.square(mu) - log_var).sum(dim=1))
        return reconstruction_loss + latent_loss

    def forward(self, X, *args, **kwargs):
        mu, log_var = self.encoder(X)
        z = self.reparameterization(mu, log_var)
        mu_prime = self.decoder(z)
        return mu_prime, mu, log_var


def seed_step(model, optimizer, X, device, stats):
    """The body of the seed's `train` loop for one batch (the VAE branch)."""
    batch_size = X.shape[0]
    X = X.view(batch_size, -1).to(device)
    model.zero_grad()
    mu_prime, mu, log_var = model(X)
    loss = model.loss(X.view(batch_size, -1), mu_prime, mu, log_var)
    loss.backward()
    optimizer.step()
    stats["total_loss"] += loss.item()
    stats["desc"] = 'Loss: {loss:.4f}'.format(loss=loss.item())  # what the seed hands tqdm


def seed_runner(root: str, steps: int, device: torch.device, in_one_tensor: bool = False):
    """`steps` steps of the seed's loop per call; the DataLoader restarts when an epoch ends, as in the seed."""
    from torchvision import transforms
    from torchvision.datasets import MNIST

    torch.manual_seed(0)
    data = MNIST(root, download=False, transform=transforms.ToTensor())
    model = SeedVAE(28 * 28, LATENT).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stats = {"total_loss": 0.0}
    if in_one_tensor:  # (a'): the whole split as one uint8 tensor, batches by a random permutation
        images = data.data.unsqueeze(1).contiguous().to(device)

        def batches():
            while True:
                perm = torch.randperm(len(images), device=device)
                for i in range(0, len(images), BATCH):
                    yield images[perm[i:i + BATCH]].float().div_(255.0), None
    else:
        loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True)

        def batches():
            while True:
                yield from loader
    it = batches()

    def run():
        model.train()
        for _ in range(steps):
            X, _y = next(it)
            seed_step(model, optimizer, X, device, stats)
    return run, linear_weights(model)


# -- (b) aecli's trainer ---------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from aecli.paths import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def trainer_runner(root: str, steps: int, overrides: list[str], batch: int = BATCH, run_dir: Path | None = None):
    """One call = one epoch of Trainer.train_epoch over exactly `steps` batches (data.limit = steps * batch)."""
    from aecli.loop import Trainer

    cfg = compose([f"data.root={root}", f"batch_size={batch}", f"data.limit={steps * batch}",
                   "trainer.progress=lines", "eval.at_end=false", *overrides])
    trainer = Trainer(cfg, run_dir or Path(tempfile.mkdtemp(prefix="aecli-bench-")))
    trainer.load_data()

    def run():
        trainer.epoch += 1
        trainer.model.on_epoch_start(trainer.epoch)
        trainer.train_epoch()
    return run, linear_weights(trainer.model), trainer


def linear_weights(model: nn.Module) -> int:
    """Weights of the linear layers (a tied weight once): the model FLOPs per image are 6 times this."""
    seen = {id(m.weight): m.weight.numel() for m in model.modules() if hasattr(m, "weight")
            and isinstance(m.weight, torch.Tensor) and m.weight.dim() == 2}
    return sum(seen.values())


# -- (c) the machine -------------------------------------------------------------------------------------------
class Matmul:
    """(c): torch.mm [m, k] x [k, n] at the model's widest layer, timed in the same rounds as the training loops
    (a busy moment lowers a loop and the peak alike); `flops` is FLOP/s of the best round."""

    def __init__(self, device: torch.device, dtype=torch.float32, m=BATCH, k=784, n=784, reps=10):
        self.a, self.b = torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype)
        self.name, self.flop = f"torch.mm {str(dtype)[6:]}", 2 * m * k * n
        self.steps = reps * (50 if device.type == "cuda" else 1)
        self.seconds, self.warmup = float("inf"), 0.0

    def run(self) -> None:
        for _ in range(self.steps):
            torch.mm(self.a, self.b)

    @property
    def flops(self) -> float:
        return self.flop / self.seconds


# -- measuring -------------------------------------------------------------------------------------------------
def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Variant:
    """A named training loop: `run()` does `steps` steps of `batch` images; `weights` sets its model FLOPs, and
    `peak` (a Matmul) the FLOP/s its model-FLOP utilization is measured against."""

    def __init__(self, name: str, run, steps: int, batch: int, weights: int, peak: float):
        self.name, self.run, self.steps, self.batch, self.weights, self.peak = name, run, steps, batch, weights, peak
        self.seconds = float("inf")  # per step, best round
        self.warmup = 0.0

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds

    @property
    def mfu(self) -> float:
        return self.images_per_s * 6 * self.weights / self.peak.flops


def measure(variants: list[Variant], rounds: int, device: torch.device) -> None:
    """Seconds per step of each variant: the warm-up call excluded, best of `rounds` interleaved rounds."""
    for v in variants:
        v.warmup = timed(v.run, device)  # first-call allocations, a compile, ...
    for _ in range(rounds):
        for v in variants:
            v.seconds = min(v.seconds, timed(v.run, device) / v.steps)


def report(variants: list[Variant], baseline: Variant | None = None, label: str = "(a)") -> None:
    for v in variants:
        ratio = f"  {v.images_per_s / baseline.images_per_s:5.2f}x {label}" if baseline is not None else ""
        print(f"  {v.name:<58} {v.images_per_s:9,.0f} img/s {v.seconds * 1e3:8.1f} ms/step  "
              f"MFU {v.mfu:6.1%}{ratio}", flush=True)


def machine(device: torch.device) -> str:
    cpu, flags = "unknown CPU", ""
    try:
        text = open("/proc/cpuinfo").read()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text]
        flags = " (" + ", ".join(have) + ")" if have else ""
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}{flags}, {os.cpu_count()} logical CPUs{gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; load average {load:.2f} at start")


# -- the run ---------------------------------------------------------------------------------------------------
def with_default_adamw(trainer, lr: float = 1e-3) -> None:
    """Ablation: torch's default AdamW (on the CPU a single-tensor loop) instead of make_optimizer's fused one."""
    trainer.optimizers = {k: torch.optim.AdamW([p for g in o.param_groups for p in g["params"]], lr=lr)
                          for k, o in trainer.optimizers.items()}


def with_item_every_step(trainer) -> None:
    """Ablation: read the loss on the host after every step, as the seed does."""
    step = trainer.model.train_step

    def reading(x, y, optimizers):
        terms = step(x, y, optimizers)
        terms["loss"].item()
        return terms
    trainer.model.train_step = reading


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds, no ablations (about a minute)")
    p.add_argument("--data-root", default=os.environ.get("AECLI_DATA_ROOT", "/tmp/data"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--compile", action="store_true", help="also time trainer.compile=true (minutes on a small CPU)")
    p.add_argument("--no-zoo", action="store_true", help="only the VAE (skip cae, aae)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    gpu = device.type == "cuda"
    steps, rounds = (3, 2) if args.quick else (6, 5)
    if gpu:
        steps *= 10
    root = str(Path(args.data_root).expanduser())
    started = time.perf_counter()
    print(f"machine: {machine(device)}")

    peak, peak_bf16 = Matmul(device), Matmul(device, torch.bfloat16)

    # -- the VAE of seed 004 ------------------------------------------------------------------------------------
    dev = [f"device={device.type}"]
    seed_hp = [f"net.hidden={SEED_HIDDEN}", "net.activation=leaky_relu", f"latent_dim={LATENT}",
               "trainer.optimizer=adamw", "lr=1e-3", *dev]
    vae = [*seed_hp, "model=vae"]
    run, w = seed_runner(root, steps, device)
    a = Variant("(a)  seed 004's loop (DataLoader+ToTensor, .item()/step)", run, steps, BATCH, w, peak)
    variants = [a]
    run, w = seed_runner(root, steps, device, in_one_tensor=True)
    variants.append(Variant("(a') seed 004's loop, data in one uint8 tensor", run, steps, BATCH, w, peak))
    run, w, _ = trainer_runner(root, steps, vae)
    b = Variant("(b)  aecli trainer (fp32)", run, steps, BATCH, w, peak)
    variants.append(b)
    run, w, _ = trainer_runner(root, steps, [*vae, "trainer.precision=bf16"])
    variants.append(Variant("(b)  aecli trainer, trainer.precision=bf16", run, steps, BATCH, w, peak_bf16))
    if not args.quick:
        run, w, trainer = trainer_runner(root, steps, vae)
        with_default_adamw(trainer)
        variants.append(Variant("     ablation: torch's default AdamW, not fused", run, steps, BATCH, w, peak))
        run, w, trainer = trainer_runner(root, steps, vae)
        with_item_every_step(trainer)
        variants.append(Variant("     ablation: loss.item() after every step", run, steps, BATCH, w, peak))
    compiled = []
    if args.compile:
        for extra, pk in (([], peak), (["trainer.precision=bf16"], peak_bf16)):
            run, w, _ = trainer_runner(root, steps, [*vae, "trainer.compile=true", *extra])
            compiled.append(Variant(f"(b)  aecli trainer, trainer.compile=true {' '.join(extra)}", run, steps,
                                    BATCH, w, pk))
        variants += compiled
    print(f"VAE, seed 004's setup (MLP 784-784-784, latent {LATENT}, batch {BATCH}, AdamW 1e-3, MNIST); "
          f"{steps} steps x {rounds} rounds each, after a warm-up:", flush=True)
    measure([peak, peak_bf16, *variants], rounds, device)
    print(f"(c) torch.mm [1024,784] x [784,784] on {device.type}: {peak.flops / 1e9:,.1f} GFLOP/s fp32, "
          f"{peak_bf16.flops / 1e9:,.1f} GFLOP/s bf16")
    report(variants, baseline=a)
    bf16 = variants[3]
    print(f"  b/a = {b.images_per_s / a.images_per_s:.2f} fp32, {bf16.images_per_s / a.images_per_s:.2f} with "
          f"trainer.precision=bf16; MFU of (b) {b.mfu:.1%} of (c) fp32, {bf16.mfu:.1%} of (c) bf16")
    bound = 6 * b.weights * BATCH / peak.flops  # seconds a step would take if it were nothing but fp32 matmuls at (c)
    print(f"  ceiling in fp32: a step of pure matmul at (c) takes {bound * 1e3:.1f} ms, so no fp32 loop can beat "
          f"{a.seconds / bound:.2f}x (a) here; (a) spends {1 - a.mfu:.0%} of its step outside the model FLOPs")

    if args.compile:
        for c in compiled:
            print(f"  {c.name.strip()}: the warm-up epoch of {steps} steps (the compile) took {c.warmup:.1f}s")

    if not args.no_zoo:
        zoo(root, steps, rounds, device, seed_hp, peak, args.quick)
    print(f"total {time.perf_counter() - started:.0f}s")


def zoo(root: str, steps: int, rounds: int, device: torch.device, seed_hp: list[str], peak: Matmul, quick: bool):
    """cae (exact Jacobian, estimate) and aae at seed 004's setup; then cae against ae at latent 16, mlp net."""
    from aecli.paths import config_dir

    have = {p.stem for p in (config_dir() / "model").glob("*.yaml")}
    slow = max(1, steps // 5)  # the exact Jacobian at latent 64 costs seconds a step
    rows = [("ae", ["model=ae"], steps), ("cae (jacobian=estimate)", ["model=cae", "model.jacobian=estimate"], steps),
            ("cae (jacobian=exact)", ["model=cae", "model.jacobian=exact"], slow), ("aae", ["model=aae"], steps)]
    rows = [r for r in rows if r[1][0].split("=")[1] in have]
    variants = []
    for name, over, n in rows:
        run, w, _ = trainer_runner(root, n, [*seed_hp, *over])
        variants.append(Variant(f"(b)  {name}", run, n, BATCH, w, peak))
    print("the zoo at seed 004's setup (MFU counts 6 x weights per image, not a Jacobian's extra passes):",
          flush=True)
    measure([peak, *variants], 1 if quick else 2, device)
    report(variants)

    if "cae" not in have or "ae" not in have:
        return
    small = ["latent_dim=16", "net=mlp", "trainer.optimizer=adamw", f"device={device.type}"]
    variants = []
    for name, over in (("ae", ["model=ae"]), ("cae, jacobian=estimate", ["model=cae", "model.jacobian=estimate"]),
                       ("cae, jacobian=exact", ["model=cae", "model.jacobian=exact"])):
        run, w, _ = trainer_runner(root, steps, [*small, *over])
        variants.append(Variant(f"(b)  {name}", run, steps, BATCH, w, peak))
    print(f"cae against ae at latent_dim 16 on the default mlp net, batch {BATCH} (targets: estimate <= 2x, "
          f"exact <= 6x the ae step):", flush=True)
    measure([peak, *variants], rounds, device)
    report(variants)
    for v in variants[1:]:
        print(f"  {v.name[5:]}: {v.seconds / variants[0].seconds:.2f}x the ae step")


if __name__ == "__main__":
    main()
