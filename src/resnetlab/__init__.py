"""resnetlab: deep residual networks (He et al. 2015) as working software.

The core (models, registry, weights, data) is imported with the package; the applications
(``resnetlab.train``, ``resnetlab.evaluate``, ``resnetlab.inference``, ...) load on first use,
as attributes (``resnetlab.inference.optimize(...)`` after ``import resnetlab``) or by import.
"""

from __future__ import annotations

import importlib

from . import models  # noqa: F401  (registers every model with the registry)
from .analysis.complexity import complexity
from .errors import ConfigError, DataError, ResnetlabError, UnknownModelError, WeightsError
from .registry import create_model, list_models, model_info
from .weights import load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "complexity",
    "load_weights",
    "save_weights",
    "save_pretrained",
    "from_pretrained",
    "ResnetlabError",
    "ConfigError",
    "DataError",
    "UnknownModelError",
    "WeightsError",
]

#: public submodules that ``import resnetlab`` does not load; ``resnetlab.NAME`` imports them on first use
SUBMODULES = (
    "analysis", "bench", "cli", "config", "constants", "data", "demo", "detection", "device", "docs", "errors", "evaluate",
    "export", "files", "hub", "importers", "inference", "models", "paper", "predict", "recipes", "registry", "report",
    "reproduce", "runfolder", "tensorboard", "train", "weights",
)


#: public functions of application modules, loaded with their module on first use (``resnetlab.hub``
#: reads ``resnetlab.evaluate`` and the data transforms, which import torchvision: ``import resnetlab``
#: stays light)
LAZY_FUNCTIONS = {"save_pretrained": "hub", "from_pretrained": "hub"}


def __getattr__(name: str) -> object:
    """``resnetlab.inference`` and the other public submodules, imported when first used; likewise
    the functions of :data:`LAZY_FUNCTIONS`."""
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f".{LAZY_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'resnetlab' has no attribute {name!r}; public names: "
                         f"{', '.join(__all__)}; submodules: {', '.join(SUBMODULES)}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES) | set(LAZY_FUNCTIONS))
