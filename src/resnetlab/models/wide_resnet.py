"""Wide Residual Networks (Zagoruyko & Komodakis 2016).

- CIFAR, WRN-d-k: a 3x3 conv with 16 filters, then three groups of N = (d - 4) / 6 pre-activation
  basic units with 16k, 32k and 64k filters on 32x32, 16x16 and 8x8 maps (Table 1), a final
  BN-ReLU, global average pool and fc; a 1x1 projection where the width changes; optional dropout
  between the two convs of a unit (section 2.4).  The units are
  :class:`~resnetlab.models.preact_resnet.PreActBasicBlock`.
- ImageNet, WRN-50-2-bottleneck: ResNet-50's bottleneck with its inner 1x1 and 3x3 convs twice
  as wide (section 4, ImageNet), torchvision's ``wide_resnet50_2`` layout and keys
  (``width_per_group=128`` of :class:`~resnetlab.models.resnet.ResNet`, stride on the 3x3 conv).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import register_model
from .layers import ShortcutOption
from .preact_resnet import CIFAR_WIDTHS, PreActBasicBlock, PreActResNet
from .resnet import ResNet, Variant, resnet

__all__ = ["wrn", "wide_resnet", "WRN_NETS"]

PAPER_CIFAR = "Zagoruyko & Komodakis 2016, section 3 (CIFAR)"
PAPER_IMAGENET = "Zagoruyko & Komodakis 2016, section 4 (ImageNet)"
#: the CIFAR nets the paper compares with the state of the art: (depth, widening factor k)
WRN_NETS = ((28, 10), (40, 4), (16, 8))


def wrn(depth: int, widen_factor: int, dropout: float = 0.0, num_classes: int = 10, in_chans: int = 3) -> PreActResNet:
    """WRN-``depth``-``widen_factor`` for CIFAR: ``depth = 6N + 4``; ``dropout`` between the convs of each unit."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"Wide ResNet depth must be 6N+4 with N >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
    if not isinstance(widen_factor, int) or isinstance(widen_factor, bool) or widen_factor < 1:
        raise ConfigError(f"widen_factor must be a positive integer, got {widen_factor!r}")
    n = (depth - 4) // 6
    widths = tuple(w * widen_factor for w in CIFAR_WIDTHS)
    return PreActResNet(PreActBasicBlock, (n, n, n), widths, stem_width=CIFAR_WIDTHS[0], num_classes=num_classes,
                        shortcut="B", stem="cifar", dropout=dropout, in_chans=in_chans)


def wide_resnet(depth: int, widen_factor: int = 2, num_classes: int = 1000, variant: Variant = "v1.5",
                shortcut: ShortcutOption = "B", zero_init_residual: bool = False, in_chans: int = 3) -> ResNet:
    """ImageNet WRN-``depth``-``widen_factor``-bottleneck: a bottleneck ResNet (50, 101, 152) whose
    inner convs are ``widen_factor`` times wider."""
    return resnet(depth, num_classes=num_classes, shortcut=shortcut, variant=variant,
                  zero_init_residual=zero_init_residual, in_chans=in_chans, width_per_group=64 * widen_factor)


register_model("wrn", family="wrn", paper=PAPER_CIFAR, input_size=(3, 32, 32), num_classes=10, generic=True)(wrn)
for _depth, _k in WRN_NETS:
    register_model(f"wrn_{_depth}_{_k}", family="wrn", paper=PAPER_CIFAR, input_size=(3, 32, 32), num_classes=10,
                   depth=_depth, widen_factor=_k)(wrn)
for _depth in (50, 101):
    register_model(f"wide_resnet{_depth}_2", family="wide_resnet", paper=PAPER_IMAGENET, depth=_depth,
                   widen_factor=2)(wide_resnet)
