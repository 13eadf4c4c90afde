"""resnetlab: deep residual networks (He et al. 2015) as working software.

``import resnetlab`` loads no torch: the public functions (``create_model``, ``load_weights``, ...)
and the submodules (``resnetlab.train``, ``resnetlab.inference``, ...) load on first use, as
attributes (``resnetlab.inference.optimize(...)`` after ``import resnetlab``) or by import
(``from resnetlab import create_model``); see :mod:`resnetlab.lazy`.
"""

from __future__ import annotations

from .errors import ConfigError, DataError, ResnetlabError, UnknownModelError, WeightsError
from .lazy import lazy_attributes

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

#: public submodules, imported on first use
SUBMODULES = (
    "analysis", "bench", "cli", "config", "constants", "data", "demo", "detection", "device", "docs", "errors", "evaluate",
    "export", "files", "hub", "importers", "inference", "lazy", "machine", "models", "paper", "predict", "recipes",
    "registry", "report", "reproduce", "runfolder", "tensorboard", "train", "weights",
)

#: public functions and the submodule each comes from, imported with it on first use
LAZY_FUNCTIONS = {
    "create_model": "registry", "list_models": "registry", "model_info": "registry",
    "complexity": "analysis.complexity", "load_weights": "weights", "save_weights": "weights",
    "save_pretrained": "hub", "from_pretrained": "hub",
}

__getattr__, __dir__ = lazy_attributes(globals(), SUBMODULES, LAZY_FUNCTIONS)
