"""AlexNet as Krizhevsky, Sutskever and Hinton (2012) built it, not as torchvision simplified it.

Five conv and three fully-connected layers (paper section 3.5, Fig. 2): conv1 96 11x11 stride 4;
conv2 256 5x5; conv3 384, conv4 384, conv5 256, all 3x3; ReLU after every layer (3.1); local
response normalisation after the ReLU of conv1 and conv2 (3.3); overlapping 3x3 stride-2 max
pooling after conv1, conv2 and conv5 (3.4); fc6 and fc7 with 4096 units and dropout 0.5 on their
outputs (4.2); a 1000-way fc8. conv2, conv4 and conv5 see only the kernel maps of their own GPU
(3.2): ``groups=2`` keeps that two-tower layout (60,965,224 parameters), ``groups=1`` gives the
one-tower form (62,378,344). LRN runs across all 96/256 maps, not per tower, as in Caffe's
``bvlc_alexnet``.

Input size: 224x224 with 2 pixels of zero padding on conv1. The paper feeds 224x224 crops
(sections 3.5, 4.1) and reports a 55x55 conv1 map, which 224 only gives with padding:
floor((224 + 4 - 11) / 4) + 1 = 55. Caffe drops the padding and feeds 227x227 crops instead,
which gives the same layer sizes and parameters. We keep the paper's (and the data
pipeline's) 224 crops.

Module names are the paper's layers (``conv1 ... conv5``, ``fc6 fc7 fc8``) with their ReLU,
norm, pool and dropout named as in Caffe (``relu1 norm1 pool1 ... drop7``), so a Caffe AlexNet
maps one to one (its weights expect 227 inputs with no conv1 padding, and BGR input order).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import register_model
from .layers import check_choice

__all__ = ["AlexNet", "LRN", "alexnet", "local_response_norm"]

PAPER = "Krizhevsky et al. 2012"

#: local response normalisation of section 3.3: b = a / (k + alpha * sum_{n neighbours} a^2)^beta
LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


def local_response_norm(size: int, alpha: float, beta: float, k: float) -> nn.LocalResponseNorm:
    """LRN with the paper's constants (section 3.3).

    The paper multiplies the sum of squares by ``alpha``; PyTorch (like Caffe) multiplies it by
    ``alpha / size``, so the paper's ``alpha`` is passed as ``alpha * size``.  Both sum over
    the ``size`` maps centred on each map (``i - size//2 .. i + size//2``), clipped at the ends.
    """
    return nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)


class AlexNet(nn.Module):
    """The network of Krizhevsky et al. 2012, Fig. 2.

    Args:
        num_classes: outputs of fc8 (1000 for ILSVRC).
        groups: 2 (default) for the paper's two-GPU layout of conv2, conv4 and conv5; 1 for one tower.
        dropout: dropout probability on the outputs of fc6 and fc7 (0.5, section 4.2).
        in_chans: input channels.
    """

    def __init__(self, num_classes: int = 1000, groups: int = 2, dropout: float = 0.5, in_chans: int = 3) -> None:
        super().__init__()
        check_choice("groups", groups, (1, 2))
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.conv1 = nn.Conv2d(in_chans, 96, kernel_size=11, stride=4, padding=2)
        self.relu1 = nn.ReLU(inplace=True)
        self.norm1 = local_response_norm(**LRN)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=groups)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm2 = local_response_norm(**LRN)
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        # conv3 connects to all kernel maps of conv2, across both GPUs (section 3.5).
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=groups)
        self.relu4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=groups)
        self.relu5 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.num_features = 4096
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(4096, 4096)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(4096, num_classes)
        self._init_paper()

    def _init_paper(self) -> None:
        # Section 5: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden
        # fully-connected layers (to give the ReLUs positive inputs early on), 0 elsewhere.
        for name, m in self.named_children():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.constant_(m.bias, 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)

    def get_classifier(self) -> nn.Linear:
        """The last fully-connected layer (fc8)."""
        return self.fc8

    def feature_stages(self) -> list:
        """Refused: AlexNet has no stages in the ResNet sense. conv1 strides 4 at once (no map at
        reduction 2), and its unpadded overlapping pools give 55/27/13/6 maps at 224, which no
        feature pyramid's power-of-two reductions describe."""
        raise ConfigError("alexnet has no feature stages: conv1 strides 4 at once (no reduction-2 map) and its "
                          "overlapping 3x3/2 pools give 55/27/13/6 maps, not the 4/8/16/32 stages features_only "
                          "returns; use a ResNet, VGG or DenseNet backbone")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The five conv layers: the pool5 map, (N, 256, 6, 6) for a 224x224 input."""
        x = self.pool1(self.norm1(self.relu1(self.conv1(x))))
        x = self.pool2(self.norm2(self.relu2(self.conv2(x))))
        x = self.relu3(self.conv3(x))
        x = self.relu4(self.conv4(x))
        x = self.pool5(self.relu5(self.conv5(x)))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """fc6, fc7 (ReLU, dropout) and fc8; ``pre_logits`` returns the 4096-d fc7 output."""
        x = torch.flatten(x, 1)
        x = self.drop6(self.relu6(self.fc6(x)))
        x = self.drop7(self.relu7(self.fc7(x)))
        return x if pre_logits else self.fc8(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(family="alexnet", paper=PAPER)
def alexnet(num_classes: int = 1000, groups: int = 2, dropout: float = 0.5, in_chans: int = 3) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012); ``groups=1`` for the one-tower form."""
    return AlexNet(num_classes=num_classes, groups=groups, dropout=dropout, in_chans=in_chans)
