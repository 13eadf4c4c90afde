"""ResNeXt (Xie et al. 2017, "Aggregated Residual Transformations for Deep Neural Networks").

A ResNeXt block is the bottleneck of ResNet-50/101 with its 3x3 conv split into C groups
("cardinality") of d channels each at conv2_x, doubling per stage (Fig. 3c, the grouped-
convolution form; Table 1: ResNeXt-50 (32x4d) has 25.0 M parameters and 4.2 G multiply-adds,
against ResNet-50's 25.5 M and 4.1 G).  It is therefore a row of the same
:class:`~resnetlab.models.resnet.ResNet`: ``groups=C, width_per_group=d``.  Downsampling
strides on the 3x3 conv (section 4, "Implementation details"), which is ``variant="v1.5"``;
keys and layout are torchvision's, so its ``resnext*`` checkpoints load strictly.
"""

from __future__ import annotations

from ..registry import register_model
from .layers import ShortcutOption
from .resnet import ResNet, Variant, resnet

__all__ = ["resnext", "RESNEXT_NETS"]

PAPER = "Xie et al. 2017, Table 1"
#: name -> (depth, cardinality C, bottleneck width d): the "C x d" of the paper's names
RESNEXT_NETS = {
    "resnext50_32x4d": (50, 32, 4),
    "resnext101_32x8d": (101, 32, 8),
    "resnext101_64x4d": (101, 64, 4),
}


def resnext(depth: int, cardinality: int, bottleneck_width: int, num_classes: int = 1000, variant: Variant = "v1.5",
            shortcut: ShortcutOption = "B", zero_init_residual: bool = False, in_chans: int = 3) -> ResNet:
    """ResNeXt-``depth`` (50 or 101, or 152: Table 1's bottleneck stacks) with ``cardinality`` groups of
    ``bottleneck_width`` channels in conv2_x's 3x3 convs."""
    return resnet(depth, num_classes=num_classes, shortcut=shortcut, variant=variant,
                  zero_init_residual=zero_init_residual, in_chans=in_chans, groups=cardinality,
                  width_per_group=bottleneck_width)


for _name, (_depth, _cardinality, _width) in RESNEXT_NETS.items():
    register_model(_name, family="resnext", paper=PAPER, depth=_depth, cardinality=_cardinality,
                   bottleneck_width=_width)(resnext)
