"""Metric functions on tensors: no models, no files. `aecli.evaluate` feeds them; tests check them on known cases.

Every function takes and returns tensors (or floats) on whatever device its inputs live on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# -- reconstruction ------------------------------------------------------------------------------------


def squared_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """||x_hat - x||^2 summed over pixels: one value per image."""
    return (x_hat.float() - x.float()).pow(2).flatten(1).sum(1)


def psnr(mse_per_pixel: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, PSNR = 10 log10(peak^2 / MSE), MSE per pixel; inf when MSE = 0."""
    if mse_per_pixel <= 0:
        return math.inf
    return 10.0 * math.log10(peak ** 2 / mse_per_pixel)


# -- likelihood bounds -------------------------------------------------------------------------------


def elbo(log_w: torch.Tensor) -> torch.Tensor:
    """The ELBO per image from log-weights log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q: [k, B] -> [B].

    ELBO = E_q[log w], estimated by the mean over the k samples (Kingma & Welling 2013, eq. 3).
    """
    return log_w.mean(0)


def iw_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound per image (Burda et al. 2015, eq. 8): [k, B] -> [B].

        L_k = log (1/k) sum_k w_k = logsumexp_k(log w_k) - log k  <=  log p(x)

    For the same samples it is never below their mean log w (Jensen), and its expectation grows with k
    toward log p(x) (Burda et al., Theorem 1).
    """
    return torch.logsumexp(log_w.double(), dim=0).to(log_w.dtype) - math.log(log_w.shape[0])


# -- distances between distributions -----------------------------------------------------------------


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features [N, D] (Heusel et al. 2017, FID):

        d^2 = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    tr (S_a S_b)^(1/2) = sum_i sqrt(eig_i(S_a^(1/2) S_b S_a^(1/2))), a symmetric PSD product, so eigvalsh
    (in float64) gives it without a general matrix square root.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    evals, evecs = torch.linalg.eigh(s_a)
    sqrt_a = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ s_b @ sqrt_a).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross
    return max(float(d2), 0.0)


def mmd_gaussian(a: torch.Tensor, b: torch.Tensor, sigma2: float | None = None) -> float:
    """Unbiased MMD^2 between samples a [N, D] and b [M, D] with k(u, v) = exp(-||u - v||^2 / (2 sigma2))
    (Gretton et al. 2012, eq. 3). sigma2 defaults to D, the scale of distances between N(0, I) samples
    (as in the WAE paper, Tolstikhin et al. 2018, whose C = 2 D sigma_z^2); 0 means the same distribution.
    """
    a, b = a.double(), b.double()
    sigma2 = float(a.shape[1]) if sigma2 is None else sigma2

    def k(u, v):
        return torch.exp(-torch.cdist(u, v).pow(2) / (2 * sigma2))

    n, m = a.shape[0], b.shape[0]
    k_aa = (k(a, a).sum() - n) / (n * (n - 1))  # the diagonal k(u, u) = 1 left out
    k_bb = (k(b, b).sum() - m) / (m * (m - 1))
    return float(k_aa + k_bb - 2 * k(a, b).mean())


# -- representations ---------------------------------------------------------------------------------


def probe_accuracy(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
                   steps: int = 100, l2: float = 1e-4, n_classes: int = 10) -> float:
    """Linear-probe accuracy: multinomial logistic regression fitted on frozen training codes, scored on test codes.

    Features are standardized with the training mean and std; the weights minimize
    mean CE(softmax(W z + b), y) + l2 ||W||^2 by full-batch L-BFGS (strong Wolfe line search), `steps` iterations.
    """
    z_train, z_test = z_train.float(), z_test.float()
    mean, std = z_train.mean(0), z_train.std(0).clamp(min=1e-6)
    z_train, z_test = (z_train - mean) / std, (z_test - mean) / std
    linear = torch.nn.Linear(z_train.shape[1], n_classes).to(z_train.device)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(z_train), y_train) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (linear(z_test).argmax(1) == y_test).float().mean().item()


def knn_accuracy(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
                 k: int = 5, n_classes: int = 10, chunk: int = 1000) -> float:
    """k-nearest-neighbour accuracy (Euclidean): each test code takes the majority label of its k nearest
    training codes; a tie goes to the tied class whose nearest member is nearest."""
    z_train, z_test = z_train.float(), z_test.float()
    k = min(k, z_train.shape[0])
    ranks = torch.arange(k, device=z_train.device)
    correct = 0
    for start in range(0, z_test.shape[0], chunk):
        d = torch.cdist(z_test[start:start + chunk], z_train)
        nearest = d.topk(k, dim=1, largest=False).indices  # sorted, nearest first
        labels = y_train[nearest]
        votes = F.one_hot(labels, n_classes).sum(1)
        # the rank of each class's nearest member among the k (k when the class is absent)
        first = torch.full_like(votes, k).scatter_reduce(1, labels, ranks.expand_as(labels), reduce="amin")
        score = votes * (k + 1) + (k - first)  # one vote outweighs any rank: ranks only break ties
        correct += (score.argmax(1) == y_test[start:start + chunk]).sum().item()
    return correct / max(z_test.shape[0], 1)


def jacobian_frobenius(f, x: torch.Tensor, y: torch.Tensor | None = None, chunk: int = 100) -> torch.Tensor:
    """||J_f(x_i)||_F = sqrt(sum_jk (d f_j / d x_ik)^2) per input, for a batched map f(x, y): [B, ...] -> [B, D].

    The Jacobian is with respect to x only (y, a label, is held fixed). Uses torch.func.jacrev on
    sum_i f(x)_i, which is the stack of the per-input Jacobians when f treats the inputs of a batch
    independently (true for every encoder in eval mode): D vector-Jacobian products per chunk, vmapped,
    exact (no random projection).
    """
    out = []
    for start in range(0, x.shape[0], chunk):
        xc = x[start:start + chunk].detach().float()
        yc = None if y is None else y[start:start + chunk]
        jac = torch.func.jacrev(lambda v: f(v, yc).sum(0))(xc)  # [D, B, ...]
        out.append(jac.pow(2).flatten(2).sum((0, 2)).sqrt())
    return torch.cat(out)


@torch.no_grad()
def contraction_ratios(f, x: torch.Tensor, radii, generator: torch.Generator | None = None) -> list[float]:
    """The contraction curve of a map f: [B, ...] -> [B, D] around the inputs x (Rifai et al. 2011, Sec. 5.2):

        ratio(r) = mean_x ||f(x + e) - f(x)|| / ||e||,   e = r u / ||u||, u ~ N(0, I)   (e uniform on the sphere)

    one e per input and radius. Below 1 the map contracts the neighbourhood of x at that distance; as r -> 0 it tends
    to the mean ||J_f(x) u||, u a random unit direction (= ||J_f(x)||_F / sqrt(input size) on average)."""
    fx = f(x).float()
    out = []
    for r in radii:
        u = torch.randn(x.shape, device=x.device, generator=generator)
        e = u * (r / u.flatten(1).norm(dim=1)).view(-1, *[1] * (x.dim() - 1))
        out.append(((f(x + e).float() - fx).flatten(1).norm(dim=1) / r).mean().item())
    return out


def activation_stats(codes: torch.Tensor, threshold: float = 0.05) -> tuple[float, float]:
    """For code activations in [0, 1] (a sparse autoencoder's sigmoid code): the mean activation, and the
    fraction of units whose mean activation over the inputs is below `threshold`."""
    per_unit = codes.float().mean(0)
    return per_unit.mean().item(), (per_unit < threshold).float().mean().item()


def principal_components(z: torch.Tensor, k: int = 2) -> torch.Tensor:
    """The projection of z [N, D] onto its first k principal components ([N, k]); z itself when D <= k."""
    if z.shape[1] <= k:
        return z
    zc = z.float() - z.float().mean(0)
    _, _, v = torch.linalg.svd(zc, full_matrices=False)
    return zc @ v[:k].T
