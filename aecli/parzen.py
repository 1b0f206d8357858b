"""The Parzen-window log-likelihood of a generator: the protocol of Goodfellow et al. 2014 (GAN, Sec. 5 and their
`parzen_ll.py`), which Makhzani et al. 2015 (AAE, Sec. 3, Table 1) follow.

A Gaussian kernel of width sigma on each of N samples s_i of the model gives a density on images,

    p_sigma(x) = (1/N) sum_i N(x; s_i, sigma^2 I)
    log p_sigma(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log N - (D/2) log(2 pi sigma^2)

sigma is the value of a fixed grid (SIGMAS: Goodfellow's, 10 widths from 0.1 to 1, log-spaced) with the highest
mean log p_sigma on the validation images; the number reported is the mean log p_sigma of the test images, in nats,
with its standard error over them (the ± of both papers). Images are vectors in [0, 1]^D. The estimate is known to
be crude in high dimension (Theis et al. 2016): it is here to stand next to the papers' numbers, not to rank models.

The squared distances come from one matrix product per batch, in float64 (||x||^2 + ||s||^2 - 2 x.s cancels badly
in float32 at small sigma), and serve every sigma of the grid.
"""

from __future__ import annotations

import math

import torch

SIGMAS = tuple(10 ** (-1 + i / 9) for i in range(10))  # numpy.logspace(-1, 0, 10), as in Goodfellow's parzen_ll.py
BATCH = 500  # images per distance matrix (BATCH x N float64 values)


def log_density(x: torch.Tensor, centers: torch.Tensor, sigmas=SIGMAS, batch: int = BATCH) -> torch.Tensor:
    """log p_sigma(x) (module doc) of every row of x [M, D] for every sigma: [len(sigmas), M], float64."""
    c = centers.flatten(1).double()
    n, d = c.shape
    c2 = c.pow(2).sum(1)
    sig = torch.tensor(sigmas, dtype=torch.float64, device=c.device)
    norm = -math.log(n) - 0.5 * d * torch.log(2 * math.pi * sig.pow(2))  # [S]
    out = []
    for start in range(0, x.shape[0], batch):
        xb = x[start:start + batch].flatten(1).double().to(c.device)
        d2 = (xb.pow(2).sum(1, keepdim=True) + c2 - 2 * xb @ c.T).clamp_(min=0)  # [B, N]
        out.append(torch.stack([torch.logsumexp(d2 / (-2 * s * s), dim=1) for s in sigmas]) + norm[:, None])
    return torch.cat(out, dim=1)


def parzen_log_likelihood(samples: torch.Tensor, val: torch.Tensor, test: torch.Tensor,
                          sigmas=SIGMAS) -> dict[str, float]:
    """The protocol of the module doc: sigma chosen on `val`, then the mean log-likelihood of `test` under the
    samples' Parzen window, and its standard error. Returns {parzen_ll, parzen_se, parzen_sigma}."""
    sigma = sigmas[int(log_density(val, samples, sigmas).mean(1).argmax())]
    ll = log_density(test, samples, (sigma,))[0]
    se = ll.std().item() / math.sqrt(len(ll)) if len(ll) > 1 else math.nan
    return {"parzen_ll": ll.mean().item(), "parzen_se": se, "parzen_sigma": sigma}
