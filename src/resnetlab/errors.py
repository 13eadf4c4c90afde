"""Typed exceptions for mistakes a user can make.

The CLI turns any :class:`ResnetlabError` into one line on stderr and a non-zero exit;
anything else is a bug in resnetlab and keeps its traceback.
"""

from __future__ import annotations


class ResnetlabError(Exception):
    """Base class of every error caused by the user's input (not by a bug)."""


class UnknownModelError(ResnetlabError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(ResnetlabError, ValueError):
    """A bad constructor argument, config key or value."""


class WeightsError(ResnetlabError):
    """A weights file that cannot be read or does not match the architecture."""


class DataError(ResnetlabError):
    """A data set path or layout that cannot be used, or an unreadable image."""


class ImageError(DataError):
    """An image file that cannot be read or decoded (training leaves such files out, and names
    them, with ``skip_bad_images=true``)."""


class TrainingError(ResnetlabError):
    """A training run that cannot go on (a NaN/inf loss); its last good checkpoint is kept."""
