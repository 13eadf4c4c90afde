"""Pieces shared by the model families: conv helpers, the shortcut options A/B/C, He init.

Paper references are to He et al. 2015, "Deep Residual Learning for Image Recognition".
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = [
    "ShortcutOption",
    "conv1x1",
    "conv3x3",
    "ZeroPadShortcut",
    "make_shortcut",
    "check_choice",
    "check_layers",
    "check_widths",
    "he_init_",
]

ShortcutOption = Optional[Literal["A", "B", "C"]]


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def check_widths(widths: object, stages: int, names: str) -> None:
    """Raise :class:`ConfigError` unless ``widths`` is a list or tuple of ``stages`` positive integers."""
    if not (isinstance(widths, (list, tuple)) and len(widths) == stages
            and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)):
        raise ConfigError(f"widths must be {stages} positive integers ({names}), got {widths!r}")


def check_layers(layers: Sequence[int], widths: Sequence[int]) -> None:
    """Raise :class:`ConfigError` unless there is a positive number of blocks for each stage width."""
    if len(layers) != len(widths) or any(n < 1 for n in layers):
        raise ConfigError(f"layers {tuple(layers)} must be positive and match widths {tuple(widths)}")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows it, section 3.4)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A (section 4.1): identity with stride-``stride`` subsampling and zero channels.

    The extra ``out_planes - in_planes`` channels are zeros, split evenly before and after
    the input channels; this is the layout of the widely used CIFAR reproduction
    (pytorch_resnet_cifar10), so its option-A checkpoints load unchanged. No parameters.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_planes - in_planes
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def make_shortcut(option: ShortcutOption, in_planes: int, out_planes: int, stride: int, *,
                  avg_down: bool = False, batch_norm: bool = True) -> nn.Module | None:
    """The shortcut module of one residual block, or ``None`` for the identity.

    A: identity; zero-padded identity where dimensions increase (no parameters).
    B: identity; 1x1 projection + BN where dimensions increase.
    C: 1x1 projection + BN on every block.
    ``None`` (plain nets) also returns ``None``: the block then adds nothing.

    ``avg_down`` (ResNet-D, He et al. 2019, section 4.1) averages 2x2 windows with the stride
    before a stride-1 projection, timm's ``avg_down`` layout (``downsample.1`` conv,
    ``downsample.2`` BN); ``batch_norm=False`` leaves the BN out (pre-activation units, He et
    al. 2016: the projection sees the unit's pre-activated input).
    """
    changes = stride != 1 or in_planes != out_planes
    if option is None or (option in ("A", "B") and not changes):
        return None
    if option == "A":
        if out_planes < in_planes:
            raise ConfigError("shortcut 'A' cannot reduce channels; use 'B' or 'C'")
        if avg_down:
            raise ConfigError("shortcut_avg_down applies to projection shortcuts ('B' or 'C'), not 'A'")
        return ZeroPadShortcut(in_planes, out_planes, stride)
    norm = [nn.BatchNorm2d(out_planes)] if batch_norm else []
    if not avg_down:
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), *norm)
    # count_include_pad=False and ceil_mode: odd maps keep their last row and column, averaged alone.
    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    return nn.Sequential(pool, conv1x1(in_planes, out_planes), *norm)


def he_init_(model: nn.Module, zero_init_residual: bool = False) -> None:
    """He (MSRA) initialisation of every conv (section 3.4, ref. [13]: std sqrt(2 / fan_in));
    BN weight 1, bias 0.  With ``zero_init_residual`` the last BN of each residual branch
    starts at 0 (Goyal et al. 2017; not in the paper, off by default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            last_bn = getattr(m, "last_bn", None)
            if isinstance(last_bn, nn.BatchNorm2d) and getattr(m, "residual", False):
                nn.init.zeros_(last_bn.weight)
