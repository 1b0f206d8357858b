"""Supervised fine-tuning of a trained encoder: the classification number of the pre-training literature.

Rifai et al. 2011 (Contractive Auto-Encoders, Table 1: CAE-1 on MNIST, 1.14% test error) and Vincent et al. 2010
score a representation by the error of a classifier whose hidden layers start as the trained encoder: the encoder
(`model.representation`) initializes an MLP, a new softmax layer over the classes is put on top, and every weight is
trained on the labels. With `eval.finetune_epochs` > 0 aecli does this:

    f(x) = softmax(V h(x) + c),   h = model.representation (its weights copied from the run), V, c zero at the start
    minimize  mean_i CE(f(x_i), y_i)  over h's and (V, c)'s weights, on the training split's labelled images
              (data.train_all, what the probe fits on), minibatch SGD with momentum 0.9, eval.finetune_lr, batches
              of 100, reshuffled by the seed every epoch
    early stopping: after each of eval.finetune_epochs epochs the validation error; the weights of the epoch with
              the lowest are kept, and their test error is the number

`finetune_acc` is that test accuracy (1 - error), `finetune_epoch` the epoch kept. Beside it, `scratch_acc` is the
same network trained the same way from a random start (each layer's default initialization, seeded): what
pre-training must beat, cached once per data set, architecture and setting (aecli/classifier.py's cache).
The run's own weights are never changed (a copy is trained).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from aecli.data import Split

BATCH = 100
MOMENTUM = 0.9


class FineTuned(torch.nn.Module):
    """The encoder of a model with a softmax layer on top: logits = V h(x) + c."""

    def __init__(self, model: torch.nn.Module, code_dim: int, n_classes: int) -> None:
        super().__init__()
        self.model = model  # a copy of the run's model: only the weights its representation reads get gradients
        self.head = torch.nn.Linear(code_dim, n_classes)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.representation(x).float())


@torch.no_grad()
def accuracy(net: FineTuned, split: Split, n: int, batch: int = 1000) -> float:
    net.eval()
    correct = 0
    for start in range(0, n, batch):
        x, y = split.batch(torch.arange(start, min(start + batch, n), device=split.images.device))
        correct += (net(x).argmax(1) == y).sum().item()
    return correct / n


def finetune(model: torch.nn.Module, train: Split, val: Split, test: Split, n_classes: int, epochs: int, lr: float,
             seed: int = 0, from_scratch: bool = False) -> dict[str, float | int]:
    """Fine-tune a copy of `model`'s encoder with a softmax layer (the module doc's protocol); from_scratch: the same
    network with its weights drawn afresh. {"acc": test accuracy of the epoch of best validation accuracy,
    "epoch": that epoch, "val_acc": its validation accuracy}."""
    device = train.images.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    body = copy.deepcopy(model)
    if from_scratch:
        torch.manual_seed(seed)
        for module in body.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    with torch.no_grad():
        code_dim = body.representation(train.batch(torch.arange(1, device=device))[0]).shape[1]
    net = FineTuned(body, code_dim, n_classes).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM)
    best: dict[str, float | int] = {"epoch": 0, "val_acc": accuracy(net, val, len(val))}  # no epoch: the zero layer
    state = copy.deepcopy(net.state_dict())
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        with torch.enable_grad():
            for start in range(0, len(train), BATCH):
                x, y = train.batch(order[start:start + BATCH])
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        val_acc = accuracy(net, val, len(val))
        if val_acc > best["val_acc"]:
            best = {"epoch": epoch, "val_acc": val_acc}
            state = copy.deepcopy(net.state_dict())
    net.load_state_dict(state)
    best["acc"] = accuracy(net, test, len(test))
    return best
