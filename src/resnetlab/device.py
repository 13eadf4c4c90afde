"""The one place a ``--device`` / ``device=`` value becomes a :class:`torch.device`."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["resolve_device"]

#: device types resnetlab runs on, and how to tell whether this machine has one
_AVAILABLE = {"cpu": lambda: True, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; else ``cpu``, ``cuda[:N]`` or ``mps``.

    A malformed name, another device type, or a device this machine lacks is a :class:`ConfigError`.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in _AVAILABLE:
        raise ConfigError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if not _AVAILABLE[device.type]():
        raise ConfigError(f"device={name} but {device.type.upper()} is not available here")
    return device
