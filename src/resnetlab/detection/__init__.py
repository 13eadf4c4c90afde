"""Object detection with resnetlab backbones: the paper's Faster R-CNN (appendix A) and an FPN
comparison, on torchvision's detection models; COCO/VOC/shapes data; COCO and VOC07 metrics.

Its modules load on first use (:mod:`resnetlab.lazy`): ``resnetlab detect --help`` loads no torch.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

__all__ = ["DETECTORS", "create_detector", "list_detectors", "load_detector"]

#: public submodules, imported on first use
SUBMODULES = ("cli", "data", "engine", "experiments", "metrics", "models", "recipes")

#: public names and the submodule each comes from
LAZY_FUNCTIONS = {name: "models" for name in __all__}

__getattr__, __dir__ = lazy_attributes(globals(), SUBMODULES, LAZY_FUNCTIONS)
