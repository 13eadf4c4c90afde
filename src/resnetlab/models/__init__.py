"""Model families. Importing this package registers every model name."""

from . import alexnet, cifar_resnet, densenet, resnet, vgg  # noqa: F401  (registration side effects)
