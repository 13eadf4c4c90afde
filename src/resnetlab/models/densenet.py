"""DenseNet and DenseNet-BC (Huang et al. 2017), ImageNet (Table 1) and CIFAR forms.

Dense connectivity (section 3): layer l of a dense block gets the concatenation of the block
input and the outputs of layers 1..l-1, and adds ``growth_rate`` (k) maps of its own.  A layer
is BN-ReLU-Conv3x3; DenseNet-B puts a BN-ReLU-Conv1x1 bottleneck to 4k maps before it.
Transitions between blocks are BN-ReLU-Conv1x1-AvgPool2x2; DenseNet-C compresses the channels
there by theta = 0.5; -BC does both.  After the last block: BN-ReLU, global average pool, fc.

ImageNet (section 3, "Implementation Details"): k = 32, a 7x7 stride-2 conv with 2k filters and a
3x3 stride-2 max pool, four BC blocks.  CIFAR: a 3x3 conv with 16 filters (2k for -BC), three
blocks on 32x32, 16x16 and 8x8 maps.  ``drop_rate`` adds dropout after every conv except the
first (section 4.2: 0.2 on the data sets without augmentation).

``memory_efficient=True`` recomputes each layer's concatenation-BN-ReLU-Conv in the backward
pass (Pleiss et al. 2017) through ``torch.utils.checkpoint``, so the concatenated inputs are not
stored: memory grows linearly in depth instead of quadratically; outputs, gradients and BN
running statistics are the same as without it.

State-dict keys are torchvision's (``features.conv0 ... features.denseblock1.denselayer1.norm1
... features.transition1.conv ... features.norm5``, ``classifier``), so torchvision DenseNet
checkpoints load strictly.  (torchvision's published DenseNet files still hold the old keys
``denselayer1.norm.1``, ``conv.2``, ...; torchvision renames them to ``norm1``, ``conv2`` on load,
and an importer must do the same.)
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..registry import register_model
from .layers import he_init_
from .features import FeatureStage

__all__ = [
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "DenseNet",
    "IMAGENET_BLOCKS",
    "densenet",
    "cifar_densenet",
]

PAPER = "Huang et al. 2017"
#: Table 1: depth -> layers in each of the four dense blocks (DenseNet-BC, k = 32)
IMAGENET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
    264: (6, 12, 64, 48),
}
#: DenseNet-B bottleneck width in units of k (section 3, "Bottleneck layers")
BN_SIZE = 4
#: DenseNet-C compression factor theta at transitions (section 3, "Compression")
COMPRESSION = 0.5


@contextlib.contextmanager
def _frozen_running_stats(bn: nn.BatchNorm2d) -> Iterator[None]:
    """While recomputing in backward, run ``bn`` exactly as in the forward pass (the same op,
    so the same saved tensors) but leave its running statistics as the forward pass left them."""
    momentum, tracked = bn.momentum, bn.num_batches_tracked.clone()
    bn.momentum = 0.0  # running = (1 - 0) * running + 0 * batch statistic: unchanged
    try:
        yield
    finally:
        bn.momentum = momentum
        bn.num_batches_tracked.copy_(tracked)


class DenseLayer(nn.Module):
    """One layer of a dense block: [BN-ReLU-Conv1x1 to ``bn_size * k``,] BN-ReLU-Conv3x3 to k.

    ``forward`` takes the list of all earlier feature maps of the block and returns the k new maps.
    """

    def __init__(
        self,
        in_planes: int,
        growth_rate: int,
        bottleneck: bool,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        first_planes = BN_SIZE * growth_rate if bottleneck else growth_rate
        self.norm1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, first_planes, kernel_size=1 if bottleneck else 3,
                               padding=0 if bottleneck else 1, bias=False)
        if bottleneck:
            self.norm2 = nn.BatchNorm2d(first_planes)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(first_planes, growth_rate, kernel_size=3, padding=1, bias=False)
        self.bottleneck = bottleneck
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def concat_conv1(self, *features: torch.Tensor) -> torch.Tensor:
        """Concatenation, BN, ReLU and the first conv: the part whose input grows with depth."""
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and any(f.requires_grad for f in features):
            if torch.compiler.is_compiling():
                # Compiled, the recomputation is part of the backward graph and the running
                # statistics are updated in the forward graph only (dynamo has no context_fn).
                out = checkpoint(self.concat_conv1, *features, use_reentrant=False)
            else:
                out = checkpoint(
                    self.concat_conv1,
                    *features,
                    use_reentrant=False,
                    context_fn=lambda: (contextlib.nullcontext(), _frozen_running_stats(self.norm1)),
                )
        else:
            out = self.concat_conv1(*features)
        if self.bottleneck:
            out = F.dropout(out, self.drop_rate, self.training)
            out = self.conv2(self.relu2(self.norm2(out)))
        return F.dropout(out, self.drop_rate, self.training)


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each fed the concatenation of all earlier maps (Fig. 1)."""

    def __init__(
        self,
        num_layers: int,
        in_planes: int,
        growth_rate: int,
        bottleneck: bool,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_planes + i * growth_rate, growth_rate, bottleneck, drop_rate, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)
        self.out_planes = in_planes + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """BN-ReLU-Conv1x1-AvgPool2x2 between dense blocks (section 3, "Pooling layers")."""

    def __init__(self, in_planes: int, out_planes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.relu(self.norm(x)))
        return self.pool(F.dropout(x, self.drop_rate, self.training))


class DenseNet(nn.Module):
    """A stem, dense blocks joined by transitions, BN-ReLU, global average pool and a linear classifier.

    Args:
        block_config: layers in each dense block.
        growth_rate: k, the maps each layer adds.
        init_planes: filters of the stem conv (2k for -BC, 16 for the CIFAR DenseNet).
        bottleneck: the 1x1 bottleneck of DenseNet-B.
        compression: theta, the fraction of channels a transition keeps (0.5 for -C, 1 otherwise).
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool) or ``"cifar"`` (3x3 conv).
        drop_rate: dropout after every conv except the stem's (section 4.2).
        memory_efficient: recompute the concatenation-BN-ReLU-Conv in backward (Pleiss et al. 2017).
        in_chans: input channels.
    """

    def __init__(
        self,
        block_config: Sequence[int],
        growth_rate: int = 32,
        init_planes: int = 64,
        bottleneck: bool = True,
        compression: float = COMPRESSION,
        num_classes: int = 1000,
        stem: Literal["imagenet", "cifar"] = "imagenet",
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not block_config or any(n < 1 for n in block_config):
            raise ConfigError(f"every dense block needs at least one layer, got {tuple(block_config)}")
        if growth_rate < 1:
            raise ConfigError(f"growth_rate must be a positive integer, got {growth_rate!r}")
        if not 0.0 < compression <= 1.0:
            raise ConfigError(f"compression must be in (0, 1], got {compression!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if stem == "imagenet":
            stem_layers = [
                ("conv0", nn.Conv2d(in_chans, init_planes, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(init_planes)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        elif stem == "cifar":
            stem_layers = [("conv0", nn.Conv2d(in_chans, init_planes, kernel_size=3, padding=1, bias=False))]
        else:
            raise ConfigError(f"stem={stem!r} is not one of 'imagenet', 'cifar'")
        self.features = nn.Sequential(OrderedDict(stem_layers))
        planes = init_planes
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, planes, growth_rate, bottleneck, drop_rate, memory_efficient)
            self.features.add_module(f"denseblock{i + 1}", block)
            planes = block.out_planes
            if i != len(block_config) - 1:
                out_planes = int(planes * compression)
                self.features.add_module(f"transition{i + 1}", Transition(planes, out_planes, drop_rate))
                planes = out_planes
        self.features.add_module("norm5", nn.BatchNorm2d(planes))
        self.features.add_module("relu5", nn.ReLU(inplace=True))
        self.num_features = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(planes, num_classes)
        he_init_(self)
        nn.init.zeros_(self.classifier.bias)

    def get_classifier(self) -> nn.Linear:
        """The final fully-connected layer."""
        return self.classifier

    def feature_stages(self) -> list[FeatureStage]:
        """Stages for ``features_only`` (models/features.py): the stem conv (with its BN-ReLU on
        ImageNet), then each dense block with the max pool or transition before it; the last
        block ends with the final BN-ReLU."""
        names = [n for n, _ in self.features.named_children()]
        stem = names[: names.index("denseblock1")]
        reduction = self.features.conv0.stride[0]
        stages = [FeatureStage("conv0", tuple(f"features.{n}" for n in stem if n != "pool0"),
                               self.features.conv0.out_channels, reduction)]
        blocks = [n for n in names if n.startswith("denseblock")]
        for i, block in enumerate(blocks):
            before = ("pool0" if "pool0" in stem else None) if i == 0 else f"transition{i}"
            if before is not None:
                reduction *= 2  # the stem's 3x3 stride-2 max pool, or a transition's 2x2 average pool
            after = ("norm5", "relu5") if i == len(blocks) - 1 else ()
            paths = tuple(f"features.{n}" for n in (before, block, *after) if n is not None)
            stages.append(FeatureStage(block, paths, self.features.get_submodule(block).out_planes, reduction))
        return stages

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, dense blocks and transitions, final BN-ReLU: the last feature map."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and the classifier; ``pre_logits`` stops after pooling."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def densenet(
    depth: int,
    num_classes: int = 1000,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    in_chans: int = 3,
) -> DenseNet:
    """ImageNet DenseNet-BC of paper Table 1 (``depth`` in 121, 169, 201, 264; k = 32)."""
    if depth not in IMAGENET_BLOCKS:
        raise ConfigError(f"ImageNet DenseNet depth must be one of {sorted(IMAGENET_BLOCKS)}, got {depth!r}")
    return DenseNet(
        IMAGENET_BLOCKS[depth],
        growth_rate=32,
        init_planes=64,
        num_classes=num_classes,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        in_chans=in_chans,
    )


def cifar_densenet(
    depth: int,
    growth_rate: int,
    bc: bool,
    num_classes: int = 10,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    in_chans: int = 3,
) -> DenseNet:
    """CIFAR DenseNet (``bc=False``) or DenseNet-BC (``bc=True``) with ``depth`` weighted layers.

    Three equal dense blocks; besides them the net has 4 weighted layers (stem conv, two
    transitions, fc), and a block layer has 1 conv (2 with the bottleneck), so
    ``depth = 3n + 4`` (``6n + 4`` for -BC) with n layers per block: 40 -> 12, BC 100 -> 16.
    """
    convs_per_layer = 2 if bc else 1
    if (
        not isinstance(depth, int)
        or isinstance(depth, bool)
        or depth < 4 + 3 * convs_per_layer
        or (depth - 4) % (3 * convs_per_layer)
    ):
        form = "6n+4 (10, 16, ..., 100, 190, 250)" if bc else "3n+4 (7, 10, ..., 40, 100)"
        raise ConfigError(f"CIFAR DenseNet{'-BC' if bc else ''} depth must be {form} with n >= 1, got {depth!r}")
    n = (depth - 4) // (3 * convs_per_layer)
    return DenseNet(
        (n, n, n),
        growth_rate=growth_rate,
        init_planes=2 * growth_rate if bc else 16,
        bottleneck=bc,
        compression=COMPRESSION if bc else 1.0,
        num_classes=num_classes,
        stem="cifar",
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        in_chans=in_chans,
    )


for _depth in IMAGENET_BLOCKS:
    register_model(f"densenet{_depth}", family="densenet", paper=f"{PAPER}, Table 1", depth=_depth)(densenet)

#: the CIFAR nets of Huang et al. 2017, Table 2: name -> (depth, growth rate k, BC)
CIFAR_DENSENETS: dict[str, tuple[int, int, bool]] = {
    "densenet40_k12": (40, 12, False),
    "densenet_bc_100_k12": (100, 12, True),
    "densenet_bc_250_k24": (250, 24, True),
    "densenet_bc_190_k40": (190, 40, True),
}
register_model("cifar_densenet", family="densenet", paper=f"{PAPER}, Table 2", input_size=(3, 32, 32),
               num_classes=10, generic=True)(cifar_densenet)
for _name, (_depth, _k, _bc) in CIFAR_DENSENETS.items():
    register_model(_name, family="densenet", paper=f"{PAPER}, Table 2", input_size=(3, 32, 32), num_classes=10,
                   depth=_depth, growth_rate=_k, bc=_bc)(cifar_densenet)
