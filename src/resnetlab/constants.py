"""Numbers of the data sets and papers that several parts of resnetlab use: the one home of each.

Every constant here is a published figure; the comment says whose.
"""

from __future__ import annotations

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "IMAGENET_PCA_EIGVAL",
    "IMAGENET_PCA_EIGVEC",
]

#: the usual ImageNet input normalization (RGB, [0, 1] scale): torchvision's, timm's, and the
#: CIFAR checkpoints of pytorch_resnet_cifar10
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: CIFAR-10 training-set channel mean/std on the [0, 1] scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: CIFAR-10 label order of the published batches (``batches.meta``), which is alphabetical.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: AlexNet's PCA colour augmentation (Krizhevsky et al. 2012, section 4.1): eigenvalues and
#: eigenvectors (columns) of the ImageNet RGB covariance on the [0, 1] scale, as published with
#: fb.resnet.torch's ``transforms.lua`` (the values every reimplementation copies).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
