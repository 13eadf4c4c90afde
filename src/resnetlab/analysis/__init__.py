"""Analysis: complexity, layer responses, gradient norms, plots, reports.

Its modules load on first use (:mod:`resnetlab.lazy`)."""

from __future__ import annotations

from ..lazy import lazy_attributes

__all__: list[str] = []

#: public submodules, imported on first use
SUBMODULES = ("complexity", "gradients", "plots", "responses")

__getattr__, __dir__ = lazy_attributes(globals(), SUBMODULES, {})
