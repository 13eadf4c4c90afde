"""CIFAR-10 ResNets and plain nets of paper section 4.2: 6n+2 weighted layers.

A 3x3 conv with 16 filters, three stages of n basic blocks (2n layers each) on 32x32,
16x16 and 8x8 maps with 16, 32 and 64 filters, global average pool and a 10-way fc.
Shortcuts are identities, option A (zero-padded) where dimensions increase.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import register_model
from .layers import ShortcutOption
from .resnet import BasicBlock, ResNet

__all__ = ["CIFAR_WIDTHS", "CIFAR_DEPTHS", "cifar_resnet", "cifar_plain"]

PAPER = "He et al. 2015, section 4.2"
#: filters of the three stages (section 4.2)
CIFAR_WIDTHS = (16, 32, 64)
#: depths the paper trains (Table 6); any 6n+2 works through cifar_resnet(depth=...)
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def _blocks_per_stage(depth: int) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
    return (depth - 2) // 6


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    shortcut: ShortcutOption = "A",
    zero_init_residual: bool = False,
    in_chans: int = 3,
) -> ResNet:
    """CIFAR ResNet with ``depth = 6n + 2`` layers; option A shortcuts by default."""
    n = _blocks_per_stage(depth)
    return ResNet(
        BasicBlock,
        (n, n, n),
        widths=CIFAR_WIDTHS,
        num_classes=num_classes,
        shortcut=shortcut,
        stem="cifar",
        zero_init_residual=zero_init_residual,
        in_chans=in_chans,
    )


def cifar_plain(depth: int, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """The plain twin of :func:`cifar_resnet` (Fig. 6 left): no shortcuts."""
    return cifar_resnet(depth, num_classes=num_classes, shortcut=None, in_chans=in_chans)


register_model("cifar_resnet", family="cifar_resnet", paper=PAPER, input_size=(3, 32, 32), num_classes=10,
               generic=True)(cifar_resnet)
register_model("cifar_plain", family="cifar_plain", paper=PAPER, input_size=(3, 32, 32), num_classes=10,
               generic=True)(cifar_plain)
for _depth in CIFAR_DEPTHS:
    register_model(f"cifar_resnet{_depth}", family="cifar_resnet", paper=PAPER,
                   input_size=(3, 32, 32), num_classes=10, depth=_depth)(cifar_resnet)
for _depth in CIFAR_DEPTHS[:-1]:
    register_model(f"cifar_plain{_depth}", family="cifar_plain", paper=PAPER,
                   input_size=(3, 32, 32), num_classes=10, depth=_depth)(cifar_plain)
