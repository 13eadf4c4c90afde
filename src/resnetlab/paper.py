"""The papers' tables as data: one place for every number resnetlab compares itself with.

Used by the tests, the README's model table and ``resnetlab reproduce``.  Sources are in
``../shared/docs/PAPER.md``; where a number is copied from a paper the comment names the table.
"""

from __future__ import annotations

# He et al. 2015, Table 1: multiply-adds ("FLOPs") at 224x224, in units of 1e9.
TABLE1_GMACS: dict[str, float] = {
    "resnet18": 1.8,
    "resnet34": 3.6,
    "resnet50": 3.8,
    "resnet101": 7.6,
    "resnet152": 11.3,
    "vgg16": 15.3,
    "vgg19": 19.6,
}

# He et al. 2015, Tables 2-4: ImageNet val error (%) as (top-1, top-5); None where not reported.
IMAGENET_10CROP_ERR: dict[str, tuple[float | None, float | None]] = {
    "plain18": (27.94, None),
    "plain34": (28.54, 10.02),
    "resnet18": (27.88, None),
    "resnet34_A": (25.03, 7.76),
    "resnet34_B": (24.52, 7.46),
    "resnet34_C": (24.19, 7.40),
    "resnet50": (22.85, 6.71),
    "resnet101": (21.75, 6.05),
    "resnet152": (21.43, 5.71),
}
IMAGENET_MULTISCALE_ERR: dict[str, tuple[float, float]] = {
    "resnet50": (20.74, 5.25),
    "resnet101": (19.87, 4.60),
    "resnet152": (19.38, 4.49),
}

# He et al. 2015, Table 6 (CIFAR-10 test error %, option A): depth -> (params in M, error %).
CIFAR10_TABLE6: dict[int, tuple[float, float]] = {
    20: (0.27, 8.75),
    32: (0.46, 7.51),
    44: (0.66, 7.17),
    56: (0.85, 6.97),
    110: (1.7, 6.43),
    1202: (19.4, 7.93),
}
CIFAR10_RESNET110_MEAN_STD = (6.61, 0.16)  # over 5 runs, Table 6

# Krizhevsky et al. 2012 (AlexNet), Table 2: one CNN, ILSVRC-2012 val error (%) as (top-1, top-5).
ALEXNET_IMAGENET_ERR = (40.7, 18.2)

# Simonyan & Zisserman 2015 (VGG), Table 2: parameters in millions by configuration A/B/D/E.
VGG_PARAMS_M: dict[str, int] = {"vgg11": 133, "vgg13": 133, "vgg16": 138, "vgg19": 144}

# Huang et al. 2017 (DenseNet), Table 2: CIFAR-10 with augmentation (C10+): (params in M, test error %).
DENSENET_CIFAR10_PLUS: dict[str, tuple[float, float]] = {
    "densenet40_k12": (1.0, 5.24),
    "densenet_bc_100_k12": (0.8, 4.51),
    "densenet_bc_250_k24": (15.3, 3.62),
    "densenet_bc_190_k40": (25.6, 3.46),
}

# He et al. 2015, appendix A, Tables 7 and 8: Faster R-CNN mAP (%) with VGG-16 and ResNet-101 backbones.
# VOC: 07 test (trained on 07+12 trainval; the devkit's VOC07 11-point AP) and 12 test (07++12; the
# evaluation server's, whose VOC2010+ AP is the area under the whole curve).
DETECTION_VOC_MAP: dict[str, tuple[float, float]] = {"vgg16": (73.2, 70.4), "resnet101": (76.4, 73.8)}
# COCO val (trained on the 80k train set): (mAP@.5, mAP@[.5, .95]).
DETECTION_COCO_MAP: dict[str, tuple[float, float]] = {"vgg16": (41.5, 21.2), "resnet101": (48.4, 27.2)}
