"""Data sets (digits, CIFAR-10/100, image folders, synthetic) and transforms."""

from .datasets import (CIFAR10_CLASSES, ImageSet, holdout_split, open_dataset, open_train_val, parse_data_spec,
                       stratified_sample)
from .images import decode_image
from .transforms import normalize

__all__ = [
    "CIFAR10_CLASSES",
    "ImageSet",
    "decode_image",
    "holdout_split",
    "normalize",
    "open_dataset",
    "open_train_val",
    "parse_data_spec",
    "stratified_sample",
]
