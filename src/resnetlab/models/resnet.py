"""ResNet and its plain twin (He et al. 2015), ImageNet form: paper Table 1.

One :class:`ResNet` class builds every residual and plain network of the paper, the CIFAR
nets of section 4.2 included (see ``cifar_resnet.py``): the stage table is data, and
``_make_stage`` is the only place stages are assembled.  State-dict keys are torchvision's
(``conv1 bn1 layer1.0.conv1 ... layer2.0.downsample.0/1 ... fc``), so torchvision ResNet
checkpoints load strictly into ``variant="v1.5"``.  Paper stage ``conv2_x`` is ``layer1``,
``conv3_x`` is ``layer2``, and so on (:data:`STAGE_NAMES`).

The successors that change only a bottleneck's width or the stem and the shortcuts are
switches of the same class, off by default: ``groups`` / ``width_per_group`` (ResNeXt, Wide
ResNets: ``resnext.py``, ``wide_resnet.py``), ``stem="deep"`` and ``shortcut_avg_down`` (ResNet-C
and ResNet-D of He et al. 2019, registered here as timm's ``resnet50d`` and friends).
"""

from __future__ import annotations

from typing import Literal, Sequence, Type, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .layers import (ShortcutOption, check_choice, check_layers, check_widths, conv1x1, conv3x3, he_init_,
                     make_shortcut)
from .features import FeatureStage

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "IMAGENET_STAGES", "STAGE_NAMES", "resnet", "plain"]

PAPER = "He et al. 2015, Table 1"
PAPER_D = "He et al. 2019, section 4.1 (ResNet-D)"
Variant = Literal["v1", "v1.5"]
SHORTCUTS = ("A", "B", "C")
VARIANTS = ("v1", "v1.5")
StemPool = Literal["torch", "caffe"]
STEM_POOLS = ("torch", "caffe")
Stem = Literal["imagenet", "cifar", "deep"]
STEMS = ("imagenet", "cifar", "deep")
#: filters of the three 3x3 convs of the deep stem (ResNet-C, He et al. 2019, Fig. 2b)
DEEP_STEM_WIDTHS = (32, 32, 64)
#: ``planes`` of conv2_x..conv5_x in paper Table 1
IMAGENET_WIDTHS = (64, 128, 256, 512)

#: paper Table 1 stage names -> module names (torchvision's keys)
STAGE_NAMES = {"conv2_x": "layer1", "conv3_x": "layer2", "conv4_x": "layer3", "conv5_x": "layer4"}


class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 2 / Fig. 5 left): y = ReLU(F(x) + shortcut(x)).

    With ``shortcut=None`` it is a plain block: y = ReLU(F(x)).
    """

    expansion = 1
    __jit_unused_properties__ = ["last_bn"]  # TorchScript (detector export) skips the init-only property

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: ShortcutOption = "B",
        variant: Variant = "v1",
        groups: int = 1,
        base_width: int = 64,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError("groups and width_per_group change a bottleneck's 3x3 conv (ResNeXt, Wide ResNets); "
                              "basic blocks (ResNet-18/34) have none")
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # torchvision calls the shortcut module "downsample"; we keep its keys.
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride, avg_down=avg_down)
        self.residual = shortcut is not None

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand x4 (Fig. 5 right), for ResNet-50/101/152.

    ``variant="v1"`` (the paper and its Caffe models) puts the stride of a downsampling
    block on the first 1x1 conv; ``"v1.5"`` (torchvision, timm) puts it on the 3x3.
    The 3x3 conv has ``planes * base_width / 64 * groups`` channels in ``groups`` groups:
    ``planes`` by default, ResNeXt's C x d with ``groups=C, base_width=d`` (Xie et al. 2017,
    Fig. 3c), a Wide ResNet's with ``base_width=128`` (torchvision's layout of both).
    """

    expansion = 4
    __jit_unused_properties__ = ["last_bn"]  # TorchScript (detector export) skips the init-only property

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut: ShortcutOption = "B",
        variant: Variant = "v1",
        groups: int = 1,
        base_width: int = 64,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if variant == "v1" else (1, stride)
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ConfigError(f"width_per_group={base_width} leaves no channel per group at {planes} planes; "
                              "widen the stages or the groups")
        self.conv1 = conv1x1(in_planes, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_planes, planes * self.expansion, stride, avg_down=avg_down)
        self.residual = shortcut is not None

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        return self.relu(out)


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    """A stem, stages of residual (or plain) blocks, global average pool and a linear classifier.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-34/50.
        widths: ``planes`` of each stage (``(64, 128, 256, 512)`` on ImageNet, ``(16, 32, 64)`` on CIFAR).
        num_classes: classifier outputs.
        shortcut: ``"A"``, ``"B"``, ``"C"`` (section 4.1), or ``None`` for the plain net.
        variant: where a downsampling bottleneck strides, ``"v1"`` (paper) or ``"v1.5"``.
        stem: ``"imagenet"`` (7x7/64 stride 2 conv + 3x3 stride-2 max pool), ``"cifar"``
            (3x3 conv with ``widths[0]`` filters, section 4.2) or ``"deep"`` (ResNet-C: three 3x3
            convs of 32, 32 and 64 filters, the first striding, + the max pool; He et al. 2019).
        stem_pool: the ImageNet stem's max pool: ``"torch"`` (padding 1, sizes rounded down, as
            torchvision) or ``"caffe"`` (no padding, sizes rounded up: ``pool1`` of the MSRA Caffe
            models). Both give 56x56 from 112x112, but they pool different windows.
        zero_init_residual: start the last BN of every residual branch at zero (not the paper's).
        in_chans: input channels.
        groups, width_per_group: the bottleneck's grouped 3x3 conv (see :class:`Bottleneck`).
        shortcut_avg_down: projections average-pool, then convolve with stride 1 (ResNet-D).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        shortcut: ShortcutOption = "B",
        variant: Variant = "v1",
        stem: Stem = "imagenet",
        zero_init_residual: bool = False,
        in_chans: int = 3,
        stem_pool: StemPool = "torch",
        groups: int = 1,
        width_per_group: int = 64,
        shortcut_avg_down: bool = False,
    ) -> None:
        super().__init__()
        check_choice("shortcut", shortcut, SHORTCUTS + (None,))
        check_choice("variant", variant, VARIANTS)
        check_choice("stem", stem, STEMS)
        check_choice("stem_pool", stem_pool, STEM_POOLS)
        check_choice("shortcut_avg_down", shortcut_avg_down, (False, True))
        for key, value in (("groups", groups), ("width_per_group", width_per_group)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if stem == "cifar" and stem_pool != "torch":
            raise ConfigError("stem_pool applies to the ImageNet stem only; the CIFAR stem has no max pool")
        check_layers(layers, widths)
        self.block = block
        self.shortcut = shortcut
        self.variant = variant
        self.block_options = dict(groups=groups, base_width=width_per_group, avg_down=shortcut_avg_down)
        self.in_planes = widths[0] if stem == "cifar" else 64
        if stem == "imagenet":
            self.conv1: nn.Module = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        elif stem == "deep":
            # ResNet-C (He et al. 2019, section 4.1): the 7x7 conv becomes three 3x3 convs; timm's keys
            # (conv1.0, conv1.1, conv1.3, conv1.4, conv1.6).
            c1, c2, c3 = DEEP_STEM_WIDTHS
            self.conv1 = nn.Sequential(conv3x3(in_chans, c1, stride=2), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
                                       conv3x3(c1, c2), nn.BatchNorm2d(c2), nn.ReLU(inplace=True), conv3x3(c2, c3))
        else:
            self.conv1 = conv3x3(in_chans, self.in_planes)
        self.bn1 = nn.BatchNorm2d(self.in_planes)
        self.relu = nn.ReLU(inplace=True)
        if stem == "cifar":
            self.maxpool: nn.Module = nn.Identity()
        elif stem_pool == "caffe":
            # pool1 of the MSRA prototxts: kernel 3, stride 2, no padding; Caffe rounds the
            # pooled size up, ceil((H - 3) / 2) + 1, which is PyTorch's ceil_mode.
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stage_names: list[str] = []
        #: module name -> the paper's Table 1 stage name (ImageNet nets only)
        self.paper_stage_names = {v: k for k, v in STAGE_NAMES.items()} if stem != "cifar" else {}
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            name = f"layer{i + 1}"
            # The first stage keeps the resolution (the max pool or the 32x32 input already
            # set it); every later stage starts with stride 2 (Table 1, section 4.2).
            self.add_module(name, self._make_stage(planes, blocks, stride=1 if i == 0 else 2))
            self.stage_names.append(name)
        self.num_features = self.in_planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        he_init_(self, zero_init_residual)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = []
        for i in range(blocks):
            stage.append(self.block(self.in_planes, planes, stride if i == 0 else 1, self.shortcut, self.variant,
                                    **self.block_options))
            self.in_planes = planes * self.block.expansion
        return nn.Sequential(*stage)

    def get_classifier(self) -> nn.Linear:
        """The final fully-connected layer (used by the fully-convolutional test, Table 4)."""
        return self.fc

    def feature_stages(self) -> list[FeatureStage]:
        """Stages for ``features_only`` (models/features.py): conv1 (after its ReLU), then each
        stage of blocks, the first with the stem's max pool (``conv2_x``, Table 1)."""
        reduction = 1 if isinstance(self.maxpool, nn.Identity) else 2  # the CIFAR stem does not stride
        stages = [FeatureStage("conv1", ("conv1", "bn1", "relu"), self.bn1.num_features, reduction)]
        for i, name in enumerate(self.stage_names):
            reduction *= (self.maxpool.stride if isinstance(self.maxpool, nn.MaxPool2d) else 1) if i == 0 else 2
            modules = ("maxpool", name) if i == 0 else (name,)
            stage = getattr(self, name)
            stages.append(FeatureStage(self.paper_stage_names.get(name, name), modules,
                                       stage[-1].last_bn.num_features, reduction))
        return stages

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all stages: the last feature map (N, num_features, H/32, W/32 on ImageNet)."""
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and the classifier; ``pre_logits`` stops after pooling."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


#: paper Table 1: depth -> (block, blocks per stage conv2_x..conv5_x)
IMAGENET_STAGES: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet(
    depth: int,
    num_classes: int = 1000,
    shortcut: ShortcutOption = "B",
    variant: Variant = "v1",
    zero_init_residual: bool = False,
    in_chans: int = 3,
    stem_pool: StemPool = "torch",
    widths: Sequence[int] = IMAGENET_WIDTHS,
    stem: Literal["imagenet", "deep"] = "imagenet",
    shortcut_avg_down: bool = False,
    groups: int = 1,
    width_per_group: int = 64,
) -> ResNet:
    """ImageNet ResNet of paper Table 1 (``depth`` in 18, 34, 50, 101, 152).

    ``stem_pool="caffe"`` is the MSRA Caffe models' ``pool1`` (see :class:`ResNet`); ``widths``
    narrows (or widens) the four stages, Table 1's ``(64, 128, 256, 512)`` by default.
    Opt-in successors, none of them the paper's: ``variant="v1.5"`` is ResNet-B, ``stem="deep"``
    ResNet-C and ``shortcut_avg_down=True`` ResNet-D (He et al. 2019, section 4.1);
    ``groups``/``width_per_group`` widen or group the bottleneck's 3x3 conv (ResNeXt, Wide ResNets).
    """
    if depth not in IMAGENET_STAGES:
        raise ConfigError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_STAGES)}, got {depth!r}")
    check_widths(widths, 4, "conv2_x..conv5_x")
    check_choice("stem", stem, ("imagenet", "deep"))
    block, layers = IMAGENET_STAGES[depth]
    return ResNet(
        block,
        layers,
        widths=tuple(widths),
        num_classes=num_classes,
        shortcut=shortcut,
        variant=variant,
        stem=stem,
        zero_init_residual=zero_init_residual,
        in_chans=in_chans,
        stem_pool=stem_pool,
        groups=groups,
        width_per_group=width_per_group,
        shortcut_avg_down=shortcut_avg_down,
    )


def plain(
    depth: int,
    num_classes: int = 1000,
    variant: Variant = "v1",
    in_chans: int = 3,
    stem_pool: StemPool = "torch",
    widths: Sequence[int] = IMAGENET_WIDTHS,
) -> ResNet:
    """The plain twin of :func:`resnet`: the same stacks with no shortcuts (section 4.1)."""
    return resnet(depth, num_classes=num_classes, shortcut=None, variant=variant, in_chans=in_chans,
                  stem_pool=stem_pool, widths=widths)


for _depth in IMAGENET_STAGES:
    register_model(f"resnet{_depth}", family="resnet", paper=PAPER, depth=_depth)(resnet)
    register_model(f"plain{_depth}", family="plain", paper=PAPER, depth=_depth)(plain)
# ResNet-D (He et al. 2019, section 4.1): ResNet-B's stride on the 3x3, ResNet-C's deep stem and the
# average-pool shortcuts together, under timm's names and keys.
for _depth in IMAGENET_STAGES:
    register_model(f"resnet{_depth}d", family="resnet_d", paper=PAPER_D, depth=_depth, variant="v1.5", stem="deep",
                   shortcut_avg_down=True)(resnet)
