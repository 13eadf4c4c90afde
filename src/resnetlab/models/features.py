"""Backbone features in timm's convention: ``create_model(name, features_only=True, out_indices=...)``.

A :class:`FeatureNet` wraps a classification model and returns the list of its stage outputs:
for an ImageNet ResNet index 0 is conv1 (after its ReLU, reduction 2) and indices 1-4 are
``conv2_x``..``conv5_x`` at reductions 4/8/16/32 (paper Table 1; ``conv2_x`` includes the
3x3 max pool that opens it).  ``model.feature_info.channels()`` / ``.reduction()`` /
``.module_name()`` describe the returned maps, as timm's ``feature_info`` does.

Each family lists its own stages (``feature_stages()`` on the model class):

- ResNet and plain nets, v1 and v1.5: as above.
- CIFAR ResNets (section 4.2): conv1 and three stages at reductions 1/1/2/4 (32x32, 32x32,
  16x16, 8x8 maps), so index 4 does not exist and the default is ``(1, 2, 3)``.
- VGG: each of the five conv stages with the max pool that ends it, reductions 2/4/8/16/32.
- DenseNet: the stem conv (2), then each dense block with the transition (or max pool) that
  precedes it, the final BN-ReLU in the last stage: 4/8/16/32; the CIFAR DenseNets 1/1/2/4.
- AlexNet is refused (see :meth:`resnetlab.models.alexnet.AlexNet.feature_stages`).

Stages after the last requested index are dropped, and so is the classifier head.  The
wrapped modules are the model's own (no copies): load weights into the full model first
(``resnetlab.load_weights(path, features_only=True)`` does), then wrap.  Reductions are the
nominal strides (products of the layer strides), as in timm.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["FeatureStage", "FeatureInfo", "FeatureNet"]


@dataclass(frozen=True)
class FeatureStage:
    """One stage of a backbone: its paper name, the model's modules it runs (dotted paths, in
    order), and the channels and reduction (input side / output side) of its output."""

    name: str
    modules: tuple[str, ...]
    channels: int
    reduction: int


class FeatureInfo:
    """What each returned feature map is (timm's ``feature_info`` interface)."""

    def __init__(self, stages: Sequence[FeatureStage], out_indices: Sequence[int]) -> None:
        self.stages = [stages[i] for i in out_indices]
        self.out_indices = tuple(out_indices)

    def channels(self) -> list[int]:
        """Channels of each returned map."""
        return [s.channels for s in self.stages]

    def reduction(self) -> list[int]:
        """Stride of each returned map relative to the input."""
        return [s.reduction for s in self.stages]

    def module_name(self) -> list[str]:
        """The paper's stage name of each returned map (``conv2_x`` ...)."""
        return [s.name for s in self.stages]

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        rows = ", ".join(f"{s.name}({s.channels}ch/{s.reduction})" for s in self.stages)
        return f"FeatureInfo({rows})"


def _stages_of(model: nn.Module) -> list[FeatureStage]:
    get = getattr(model, "feature_stages", None)
    name = getattr(model, "resnetlab_name", type(model).__name__)
    if not callable(get):
        raise ConfigError(f"{name} has no feature stages: features_only is not supported for it")
    return get()


class FeatureNet(nn.Module):
    """The stages of ``model`` up to the last of ``out_indices``; ``forward`` returns their outputs.

    Args:
        model: a resnetlab classification model whose class defines ``feature_stages()``.
        out_indices: stage indices to return, increasing (default: every stage after the stem).
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        stages = _stages_of(model)
        if out_indices is None:
            out_indices = tuple(range(1, len(stages)))
        indices = tuple(out_indices)
        valid = all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
        if not indices or not valid or list(indices) != sorted(set(indices)) or not 0 <= indices[0] <= indices[-1] < len(stages):
            names = ", ".join(f"{i}={s.name}" for i, s in enumerate(stages))
            raise ConfigError(f"out_indices {indices!r} must be increasing stage indices of "
                              f"{getattr(model, 'resnetlab_name', type(model).__name__)} ({names})")
        self.stages = nn.ModuleList(
            nn.Sequential(OrderedDict((path.replace(".", "_"), model.get_submodule(path)) for path in s.modules))
            for s in stages[: indices[-1] + 1]
        )
        self.out_indices: list[int] = list(indices)
        self.feature_info = FeatureInfo(stages, indices)
        for attr in ("resnetlab_name", "resnetlab_kwargs"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outputs.append(x)
        return outputs

