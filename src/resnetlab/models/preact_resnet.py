"""Pre-activation ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks").

A full pre-activation unit (Fig. 4e) puts BN and ReLU before each conv and nothing after the
addition, so the shortcut path is a clean identity from unit to unit: x_{l+1} = x_l + F(x_l).
Two units differ (section 4.1): the first unit of the network shares its pre-activation with
the shortcut ("the first activation right after conv1 and before splitting into two paths"),
and a final BN-ReLU follows the last addition, before the global average pool.  A projection
shortcut, where dimensions increase, takes the pre-activated input too and has no BN of its own
(appendix: "these projection shortcuts are also with pre-activation"; the authors' released
resnet-1k-layers code).

- CIFAR (section 5): a 3x3 conv with 16 filters, three stages on 32x32, 16x16 and 8x8 maps;
  basic units give 6n+2 layers (``preact_resnet110``), bottleneck units 9n+2 with outputs of
  64, 128 and 256 channels (``preact_resnet164``, ``preact_resnet1001``); any n through
  ``cifar_preact_resnet(depth=..., bottleneck=...)``.
- ImageNet: paper Table 1's stacks (and ResNet-200's 3, 24, 36, 3) with the 7x7 conv and max
  pool as stem: ``preact_resnet18 ... preact_resnet200``.

The arrangement is the paper's: a downsampling unit strides at the start of its stage, like
the 2015 nets (``variant="v1"`` on the first 1x1 conv of a bottleneck, as the authors' code;
``"v1.5"`` on the 3x3, as fb.resnet.torch and timm's ``resnetv2``).  Keras's ResNet50V2 is
another arrangement: it strides in the last unit of a stage.  Keys are our own (no other
library shares this arrangement's layout): ``conv1``, ``layerN.M.{bn1,conv1,bn2,conv2[,bn3,conv3]}``,
``layerN.M.downsample.0``, ``final_bn``, ``fc``.
"""

from __future__ import annotations

from typing import Literal, Sequence, Type, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .features import FeatureStage
from .layers import (ShortcutOption, ZeroPadShortcut, check_choice, check_layers, check_widths, conv1x1, conv3x3,
                     he_init_, make_shortcut)
from .resnet import IMAGENET_STAGES, IMAGENET_WIDTHS, STAGE_NAMES, VARIANTS, Bottleneck, Variant

__all__ = ["PreActUnit", "PreActBasicBlock", "PreActBottleneck", "PreActResNet", "PREACT_IMAGENET_STAGES",
           "preact_resnet", "cifar_preact_resnet"]

PAPER = "He et al. 2016, section 5"
#: filters of the CIFAR stem and ``planes`` of the three CIFAR stages (section 5; the 2015 nets' 16/32/64)
CIFAR_WIDTHS = (16, 32, 64)
#: CIFAR depths the paper trains: (depth, bottleneck)
CIFAR_NETS = ((110, False), (164, True), (1001, True))


class PreActUnit(nn.Module):
    """What every full pre-activation unit shares (Fig. 4e): y = shortcut(x) + F(BN-ReLU(x)), and
    nothing after the addition.

    The shortcut takes the pre-activated input where it is a projection, and in the network's first
    unit (``shared_preact``; section 4.1: "the first activation right after conv1 and before splitting
    into two paths"); identities and zero-padded identities (option A) take ``x`` as it is: the clean
    path.  Subclasses build ``bn1``, ``relu`` and their convs, call :meth:`_add_shortcut`, and define
    :meth:`residual`, the branch F after the first BN-ReLU.
    """

    def _add_shortcut(self, in_planes: int, out_planes: int, stride: int, shortcut: ShortcutOption,
                      shared_preact: bool) -> None:
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride, batch_norm=False)
        projection = self.downsample is not None and not isinstance(self.downsample, ZeroPadShortcut)
        self.shortcut_preact = shared_preact or projection

    def residual(self, preact: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.relu(self.bn1(x))
        identity = preact if self.shortcut_preact else x
        if self.downsample is not None:
            identity = self.downsample(identity)
        return self.residual(preact) + identity


class PreActBasicBlock(PreActUnit):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (Fig. 4e), plus the shortcut.

    ``dropout`` > 0 drops activations between the two convs (Wide ResNets, Zagoruyko &
    Komodakis 2016, section 2.4).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: ShortcutOption = "B",
                 variant: Variant = "v1", shared_preact: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self._add_shortcut(in_planes, planes, stride, shortcut, shared_preact)

    def residual(self, preact: torch.Tensor) -> torch.Tensor:
        out = self.conv1(preact)
        out = self.relu(self.bn2(out))
        out = self.dropout(out)
        return self.conv2(out)


class PreActBottleneck(PreActUnit):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (expanding x4), plus the shortcut.

    ``variant`` places the stride of a downsampling unit as in :class:`~resnetlab.models.resnet.Bottleneck`.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: ShortcutOption = "B",
                 variant: Variant = "v1", shared_preact: bool = False) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if variant == "v1" else (1, stride)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(in_planes, planes, stride_1x1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self._add_shortcut(in_planes, planes * self.expansion, stride, shortcut, shared_preact)

    def residual(self, preact: torch.Tensor) -> torch.Tensor:
        out = self.conv1(preact)
        out = self.relu(self.bn2(out))
        out = self.conv2(out)
        out = self.relu(self.bn3(out))
        return self.conv3(out)


PreActBlock = Type[Union[PreActBasicBlock, PreActBottleneck]]


class PreActResNet(nn.Module):
    """A stem conv, stages of pre-activation units, a final BN-ReLU, global average pool, fc.

    Args:
        block: :class:`PreActBasicBlock` or :class:`PreActBottleneck`.
        layers: units per stage.
        widths: ``planes`` of each stage (a bottleneck's outputs are 4x).
        stem_width: filters of the stem conv.
        num_classes: classifier outputs.
        shortcut: ``"A"`` (zero-padded identity), ``"B"`` (projections where dimensions
            increase, the paper's) or ``"C"`` (projections everywhere); section 4.1 of He et al. 2015.
        variant: where a downsampling bottleneck strides, ``"v1"`` (first 1x1) or ``"v1.5"`` (3x3).
        stem: ``"imagenet"`` (7x7/2 conv and 3x3/2 max pool) or ``"cifar"`` (3x3 conv).
        dropout: dropout between the two convs of a basic unit (Wide ResNets).
        in_chans: input channels.
    """

    def __init__(
        self,
        block: PreActBlock,
        layers: Sequence[int],
        widths: Sequence[int],
        stem_width: int,
        num_classes: int = 1000,
        shortcut: ShortcutOption = "B",
        variant: Variant = "v1",
        stem: Literal["imagenet", "cifar"] = "imagenet",
        dropout: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_choice("shortcut", shortcut, ("A", "B", "C"))
        check_choice("variant", variant, VARIANTS)
        check_choice("stem", stem, ("imagenet", "cifar"))
        if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if dropout and block is not PreActBasicBlock:
            raise ConfigError("dropout between the convs is the Wide ResNets' (basic units); bottleneck units "
                              "have none")
        check_layers(layers, widths)
        self.block = block
        self.shortcut = shortcut
        self.variant = variant
        self.in_planes = stem_width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, stem_width)
            self.maxpool = nn.Identity()
        options = {"dropout": dropout} if block is PreActBasicBlock else {}
        self.stage_names: list[str] = []
        self.stage_channels: list[int] = []
        self.paper_stage_names = {v: k for k, v in STAGE_NAMES.items()} if stem == "imagenet" else {}
        for i, (planes, units) in enumerate(zip(widths, layers)):
            stage = []
            for j in range(units):
                stride = 2 if i > 0 and j == 0 else 1
                first = i == 0 and j == 0
                stage.append(block(self.in_planes, planes, stride, shortcut, variant, shared_preact=first, **options))
                self.in_planes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.stage_names.append(f"layer{i + 1}")
            self.stage_channels.append(self.in_planes)
        self.num_features = self.in_planes
        # section 4.1: "an extra activation right after its element-wise addition" of the last unit
        self.final_bn = nn.BatchNorm2d(self.num_features)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        he_init_(self)

    def get_classifier(self) -> nn.Linear:
        """The final fully-connected layer."""
        return self.fc

    def feature_stages(self) -> list[FeatureStage]:
        """Stages for ``features_only``: conv1 (a pre-activation net has no BN-ReLU there), then each
        stage of units, the first with the stem's max pool, the last with the final BN-ReLU.  Earlier
        stages end on an addition, before the next unit's BN-ReLU (as timm's ``resnetv2``)."""
        pool = 2 if isinstance(self.maxpool, nn.MaxPool2d) else 1  # the ImageNet stem strides twice
        reduction = pool
        stages = [FeatureStage("conv1", ("conv1",), self.conv1.out_channels, reduction)]
        for i, (name, channels) in enumerate(zip(self.stage_names, self.stage_channels)):
            reduction *= pool if i == 0 else 2
            last = i == len(self.stage_names) - 1
            modules = (("maxpool",) if i == 0 else ()) + (name,) + (("final_bn", "relu") if last else ())
            stages.append(FeatureStage(self.paper_stage_names.get(name, name), modules, channels, reduction))
        return stages

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, all stages and the final BN-ReLU: the last feature map."""
        x = self.conv1(x)
        x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.relu(self.final_bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and the classifier; ``pre_logits`` stops after pooling."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_PREACT_BLOCK = {Bottleneck: PreActBottleneck}
#: ImageNet stacks: paper Table 1 of He et al. 2015, and ResNet-200 (He et al. 2016, section 5:
#: fb.resnet.torch's 3, 24, 36, 3 bottleneck units)
PREACT_IMAGENET_STAGES: dict[int, tuple[PreActBlock, tuple[int, ...]]] = {
    **{depth: (_PREACT_BLOCK.get(block, PreActBasicBlock), layers)
       for depth, (block, layers) in IMAGENET_STAGES.items()},
    200: (PreActBottleneck, (3, 24, 36, 3)),
}


def preact_resnet(depth: int, num_classes: int = 1000, shortcut: ShortcutOption = "B", variant: Variant = "v1",
                  in_chans: int = 3, widths: Sequence[int] = IMAGENET_WIDTHS) -> PreActResNet:
    """ImageNet pre-activation ResNet (``depth`` in 18, 34, 50, 101, 152, 200); ``widths`` as for
    :func:`~resnetlab.models.resnet.resnet`."""
    if depth not in PREACT_IMAGENET_STAGES:
        raise ConfigError(f"ImageNet pre-activation ResNet depth must be one of {sorted(PREACT_IMAGENET_STAGES)}, "
                          f"got {depth!r}")
    check_widths(widths, 4, "conv2_x..conv5_x")
    block, layers = PREACT_IMAGENET_STAGES[depth]
    return PreActResNet(block, layers, tuple(widths), stem_width=64, num_classes=num_classes, shortcut=shortcut,
                        variant=variant, in_chans=in_chans)


def cifar_preact_resnet(depth: int, bottleneck: bool = False, num_classes: int = 10, shortcut: ShortcutOption = "B",
                        variant: Variant = "v1", in_chans: int = 3) -> PreActResNet:
    """CIFAR pre-activation ResNet: ``depth = 6n + 2`` with basic units, ``9n + 2`` with bottleneck units."""
    check_choice("bottleneck", bottleneck, (False, True))
    per_n = 3 * (3 if bottleneck else 2)  # weighted layers per unit in each of the three stages
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < per_n + 2 or (depth - 2) % per_n:
        form = "9n+2 (11, 20, ..., 164, 1001)" if bottleneck else "6n+2 (8, 14, 20, ..., 110)"
        raise ConfigError(f"CIFAR pre-activation ResNet depth with {'bottleneck' if bottleneck else 'basic'} units "
                          f"must be {form} with n >= 1, got {depth!r}")
    n = (depth - 2) // per_n
    block = PreActBottleneck if bottleneck else PreActBasicBlock
    return PreActResNet(block, (n, n, n), CIFAR_WIDTHS, stem_width=CIFAR_WIDTHS[0], num_classes=num_classes,
                        shortcut=shortcut, variant=variant, stem="cifar", in_chans=in_chans)


for _depth in PREACT_IMAGENET_STAGES:
    register_model(f"preact_resnet{_depth}", family="preact_resnet", paper=PAPER, depth=_depth)(preact_resnet)
register_model("cifar_preact_resnet", family="cifar_preact_resnet", paper=PAPER, input_size=(3, 32, 32),
               num_classes=10, generic=True)(cifar_preact_resnet)
for _depth, _bottleneck in CIFAR_NETS:
    register_model(f"preact_resnet{_depth}", family="cifar_preact_resnet", paper=PAPER, input_size=(3, 32, 32),
                   num_classes=10, depth=_depth, bottleneck=_bottleneck)(cifar_preact_resnet)
