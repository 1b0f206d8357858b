"""What a metric's name says about it, without importing torch: what it is, which way is better."""

from __future__ import annotations

DESCRIPTIONS = {  # the test metrics of `aecli eval` (aecli/evaluate.py), test_<key> as an optimized_metric
    # key: (what it is, the key of its floor or reference)
    "recon_bce": ("reconstruction, Bernoulli NLL, nats/image (lower is better)", None),
    "recon_mse": ("reconstruction, squared error summed over pixels", None),
    "psnr": ("reconstruction PSNR, dB (higher is better)", None),
    "probe_acc": ("linear probe on codes, test accuracy", "pixel_probe_acc"),
    "knn_acc": ("kNN on codes, test accuracy", "pixel_knn_acc"),
    "finetune_acc": ("encoder fine-tuned with a softmax layer on the labels, test accuracy", "scratch_acc"),
    "jacobian_fro": ("mean encoder Jacobian norm ||J_f(x)||_F", None),
    "elbo": ("ELBO, nats/image", None),
    "iw_bound": ("importance-weighted bound on log p(x), nats/image", "elbo"),
    "denoised_psnr": ("PSNR of the reconstruction of a corrupted image", "noisy_psnr"),
    "mean_activation": ("mean code activation", None),
    "off_fraction": ("fraction of units with mean activation below the threshold", None),
    "mmd": ("MMD^2 of test codes to the prior (0 = the same)", None),
    "frechet": ("Fréchet distance of samples to test images (lower is better)", "frechet_floor"),
    "label_acc": ("classifier accuracy on samples of each label", "classifier_acc"),
    "parzen_ll": ("Parzen-window log-likelihood of test images under samples, nats (higher is better)", None),
}
HIGHER_IS_BETTER = ("_acc", "psnr", "elbo", "iw_bound", "log_likelihood", "parzen_ll")


def direction(metric: str) -> str:
    """Whether a metric is better higher (accuracies, PSNRs, log-likelihood bounds) or lower (losses, distances):
    "maximize" or "minimize", as Optuna names them."""
    return "maximize" if str(metric).removeprefix("test_").endswith(HIGHER_IS_BETTER) else "minimize"
