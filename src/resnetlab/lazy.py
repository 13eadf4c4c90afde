"""Packages whose modules load on first use: ``import resnetlab`` and ``resnetlab --help`` load no
torch, and a command loads what it needs when it runs.

A package's ``__init__`` declares its public submodules and functions by name;
:func:`lazy_attributes` gives it the module-level ``__getattr__`` and ``__dir__`` (PEP 562)
that import them when first used, as attributes (``resnetlab.create_model``,
``resnetlab.inference.optimize``) or by import (``from resnetlab import create_model``).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

__all__ = ["lazy_attributes"]


def lazy_attributes(namespace: dict[str, Any], submodules: Sequence[str],
                    functions: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``:
    ``submodules`` are imported when first used, and each name of ``functions`` is taken from its
    module (``{"create_model": "registry"}``) the same way. An unknown name is an
    ``AttributeError`` listing the package's ``__all__`` and submodules."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> object:
        if name in functions:
            return getattr(importlib.import_module(f"{package}.{functions[name]}"), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}; public names: "
                             f"{', '.join(namespace.get('__all__', ()))}; submodules: {', '.join(submodules)}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *submodules, *functions})

    return __getattr__, __dir__
