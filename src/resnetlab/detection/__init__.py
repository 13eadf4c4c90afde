"""Object detection with resnetlab backbones: the paper's Faster R-CNN (appendix A) and an FPN
comparison, on torchvision's detection models; COCO/VOC/shapes data; COCO and VOC07 metrics."""

from .models import DETECTORS, create_detector, list_detectors, load_detector

__all__ = ["DETECTORS", "create_detector", "list_detectors", "load_detector"]
