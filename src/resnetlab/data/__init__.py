"""Data sets and transforms."""

from .transforms import normalize

__all__ = ["normalize"]
