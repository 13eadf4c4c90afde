"""Model families. Importing this package registers every model name."""

from . import cifar_resnet, resnet  # noqa: F401  (registration side effects)
