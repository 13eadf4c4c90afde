"""resnetlab: deep residual networks (He et al. 2015) as working software."""

from .analysis.complexity import complexity
from .errors import ConfigError, DataError, ResnetlabError, UnknownModelError, WeightsError
from .registry import create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "complexity",
    "load_weights",
    "save_weights",
    "ResnetlabError",
    "ConfigError",
    "DataError",
    "UnknownModelError",
    "WeightsError",
]


def __getattr__(name: str):
    # weights.py pulls in safetensors; import it only when asked for.
    if name in ("load_weights", "save_weights"):
        from . import weights

        return getattr(weights, name)
    raise AttributeError(name)
