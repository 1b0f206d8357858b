"""`data=mnist`: the MNIST handwritten digits (LeCun et al. 1998), 60,000 training and 10,000 test images of 28x28
grey levels, ten classes. conf/data/mnist.yaml."""

from __future__ import annotations

from aecli.datasets.idx import IdxDataset


class MNIST(IdxDataset):
    name = "mnist"
    folder = "MNIST"
    torchvision_class = "MNIST"
    source = "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror of yann.lecun.com/exdb/mnist)"
    classes = [str(i) for i in range(10)]
    counts = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
