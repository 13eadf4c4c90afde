"""Model registry: name -> builder, with the paper each model comes from.

A builder is a function ``(num_classes=..., **kwargs) -> nn.Module`` registered with
:func:`register_model`.  ``create_model`` checks keyword arguments against the builder's
signature so that a typo is a clear :class:`ConfigError`, never a silent default.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from .errors import ConfigError, UnknownModelError

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: str
    input_size: tuple[int, int, int]
    num_classes: int
    defaults: dict[str, Any] = field(default_factory=dict)
    generic: bool = False  # needs architecture arguments (e.g. depth); hidden from list_models()


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    paper: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    generic: bool = False,
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder`` under ``name`` (default: the function's name).

    ``defaults`` are keyword arguments bound for this name, e.g. ``depth=20`` for
    ``cifar_resnet20`` built by the generic ``cifar_resnet`` builder.  A ``generic`` name
    (``cifar_resnet``) needs its architecture arguments (``depth=8``) and is listed only
    with ``list_models(include_generic=True)``.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise RuntimeError(f"model {key!r} registered twice")
        _REGISTRY[key] = ModelInfo(key, builder, family, paper, input_size, num_classes, dict(defaults), generic)
        return builder

    return wrap


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``; :class:`UnknownModelError` names close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see `resnetlab list`)"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def list_models(pattern: str = "*", include_generic: bool = False) -> list[str]:
    """Registered model names matching the glob ``pattern``, in registration order.

    Generic builders such as ``cifar_resnet`` (any ``depth``) are included on request.
    """
    return [
        n for n, info in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern) and (include_generic or not info.generic)
    ]


def create_model(
    name: str,
    num_classes: int | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    ``num_classes`` defaults to the model's data set (1000 for ImageNet, 10 for CIFAR-10).
    ``features_only=True`` returns a :class:`~resnetlab.models.features.FeatureNet` whose forward
    gives the stage outputs ``out_indices`` (default: every stage after the stem, e.g. conv2_x..conv5_x)
    and whose ``feature_info`` lists their channels and reductions (timm's convention).
    Unknown keyword arguments and bad values raise :class:`ConfigError`.
    """
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices is only used with features_only=True")
    info = model_info(name)
    params = dict(info.defaults)
    params.update(kwargs)
    params["num_classes"] = info.num_classes if num_classes is None else num_classes
    if not isinstance(params["num_classes"], int) or params["num_classes"] < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {params['num_classes']!r}")
    sig = inspect.signature(info.builder)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    missing = [
        p.name for p in sig.parameters.values()
        if p.default is p.empty and p.kind is not p.VAR_KEYWORD and p.name not in params
    ]
    if missing:
        raise ConfigError(f"{name} needs {', '.join(f'{m}=...' for m in missing)}")
    unknown = [k for k in params if k not in sig.parameters and not accepts_any]
    if unknown:
        allowed = ", ".join(p for p in sig.parameters if p != "num_classes" and p not in info.defaults)
        raise ConfigError(f"{name}: unknown argument(s) {', '.join(map(repr, unknown))}; accepted: {allowed}")
    fixed = [k for k in kwargs if k in info.defaults and kwargs[k] != info.defaults[k]]
    if fixed:
        raise ConfigError(
            f"{name}: {fixed[0]}={info.defaults[fixed[0]]!r} is fixed by the name; "
            f"use the generic builder {info.builder.__name__!r} for other values"
        )
    model = info.builder(**params)
    # Plain attributes (not in the state dict): what save_weights writes into a weights file
    # so that load_weights can rebuild exactly this architecture.
    model.resnetlab_name = name
    model.resnetlab_kwargs = {k: v for k, v in params.items() if k not in info.defaults}
    return FeatureNet(model, out_indices) if features_only else model


# Imported last: the model package registers its families through register_model above.
from .models.features import FeatureNet  # noqa: E402
