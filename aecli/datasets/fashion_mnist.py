"""`data=fashion_mnist`: Zalando's Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), a drop-in replacement of MNIST:
60,000 training and 10,000 test images of 28x28 grey levels, ten kinds of clothing. conf/data/fashion_mnist.yaml."""

from __future__ import annotations

from aecli.datasets.idx import IdxDataset


class FashionMNIST(IdxDataset):
    name = "fashion_mnist"
    folder = "FashionMNIST"
    torchvision_class = "FashionMNIST"
    source = "https://github.com/zalandoresearch/fashion-mnist (the data/fashion folder)"
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    counts = {"train": [6000] * 10, "test": [1000] * 10}
