"""Model families. Importing this package registers every model name."""

from . import (  # noqa: F401  (registration side effects)
    alexnet, cifar_resnet, densenet, preact_resnet, resnet, resnext, vgg, wide_resnet,
)
