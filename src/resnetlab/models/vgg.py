"""VGG (Simonyan & Zisserman 2015): configurations A, B, D, E of Table 1 = VGG-11/13/16/19.

Five stages of 3x3 convs (stride 1, padding 1), each followed by a 2x2 stride-2 max pool
(section 2.1); fc6 and fc7 with 4096 units and dropout 0.5 (section 3.1); a 1000-way fc8.
The ``_bn`` forms add batch normalisation after every conv (not in the paper; torchvision's).

State-dict keys are torchvision's (``features.<i>``, ``classifier.0/3/6``), so torchvision VGG
checkpoints load strictly.  Like torchvision, an adaptive average pool to 7x7 sits between
the convs and fc6: the identity at 224x224 (the paper's training size), it lets other input
sizes run; the paper's dense multi-scale test (fc layers as convs, section 3.2) is not this.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .features import FeatureStage

__all__ = ["VGG", "VGG_STAGES", "VGG_WIDTHS", "vgg"]

PAPER = "Simonyan & Zisserman 2015, Table 1"
#: Table 1: depth (weight layers) -> 3x3 convs in each of the five stages (configurations A, B, D, E)
VGG_STAGES: dict[int, tuple[int, int, int, int, int]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
#: Table 1: conv width of each stage
VGG_WIDTHS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
    """Stages of 3x3 convs and max pools, then three fully-connected layers.

    Args:
        stages: convs per stage, e.g. ``(2, 2, 3, 3, 3)`` for VGG-16.
        widths: filters of each stage.
        num_classes: outputs of the last fully-connected layer.
        batch_norm: BN after every conv (the ``_bn`` models).
        dropout: dropout probability after fc6 and fc7 (0.5, section 3.1).
        in_chans: input channels.
    """

    def __init__(
        self,
        stages: Sequence[int],
        widths: Sequence[int] = VGG_WIDTHS,
        num_classes: int = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if len(stages) != len(widths) or any(n < 1 for n in stages):
            raise ConfigError(f"stages {tuple(stages)} must be positive and match widths {tuple(widths)}")
        layers: list[nn.Module] = []
        in_planes = in_chans
        for convs, planes in zip(stages, widths):
            for _ in range(convs):
                layers.append(nn.Conv2d(in_planes, planes, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(planes))
                layers.append(nn.ReLU(inplace=True))
                in_planes = planes
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.num_features = 4096
        self.classifier = nn.Sequential(
            nn.Linear(in_planes * 7 * 7, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),  # fc8
        )
        # Section 3.1: the deeper nets were initialised from net A, "but it is possible to
        # initialise the weights without pre-training by using the random initialisation
        # procedure of Glorot & Bengio (2010)"; biases 0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Linear:
        """The last fully-connected layer (fc8)."""
        return self.classifier[-1]

    def feature_stages(self) -> list[FeatureStage]:
        """Stages for ``features_only`` (models/features.py): each conv stage with the 2x2 max
        pool that ends it (``pool1``..``pool5``, reductions 2/4/8/16/32)."""
        stages, start, channels, reduction = [], 0, 0, 1
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                channels = layer.out_channels
            elif isinstance(layer, nn.MaxPool2d):
                reduction *= layer.stride
                paths = tuple(f"features.{j}" for j in range(start, i + 1))
                stages.append(FeatureStage(f"pool{len(stages) + 1}", paths, channels, reduction))
                start = i + 1
        return stages

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv stages: the last pooled map, (N, 512, 7, 7) for a 224x224 input."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool to 7x7, fc6, fc7 and fc8; ``pre_logits`` returns the 4096-d fc7 output."""
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """The fully-convolutional head over a feature map of any size >= 7x7: fc6 as a 7x7
        convolution, fc7 and fc8 as 1x1 convolutions, giving a class score map (N, K, h, w)
        (Simonyan & Zisserman 2015, section 3.2 "Testing"; the dense test of ResNet paper
        section 3.4).  At 224x224 the map is 1x1 and equals :meth:`forward`."""
        fc6, fc7, fc8 = (m for m in self.classifier if isinstance(m, nn.Linear))
        x = F.relu(F.conv2d(x, fc6.weight.view(fc6.out_features, x.shape[1], 7, 7), fc6.bias))
        x = F.relu(F.conv2d(x, fc7.weight[:, :, None, None], fc7.bias))
        return F.conv2d(x, fc8.weight[:, :, None, None], fc8.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def vgg(
    depth: int,
    num_classes: int = 1000,
    batch_norm: bool = False,
    dropout: float = 0.5,
    in_chans: int = 3,
) -> VGG:
    """VGG of paper Table 1 (``depth`` in 11, 13, 16, 19); ``batch_norm`` for the ``_bn`` form."""
    if depth not in VGG_STAGES:
        raise ConfigError(f"VGG depth must be one of {sorted(VGG_STAGES)}, got {depth!r}")
    return VGG(VGG_STAGES[depth], num_classes=num_classes, batch_norm=batch_norm, dropout=dropout, in_chans=in_chans)


for _depth in VGG_STAGES:
    register_model(f"vgg{_depth}", family="vgg", paper=PAPER, depth=_depth, batch_norm=False)(vgg)
    register_model(f"vgg{_depth}_bn", family="vgg", paper=PAPER, depth=_depth, batch_norm=True)(vgg)
