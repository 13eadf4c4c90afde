"""``key=value`` overrides, in the manner of nanoGPT: parsed, type-checked, never guessed.

Used by ``resnetlab info MODEL key=value`` (model keyword arguments) and by
``resnetlab train RECIPE key=value`` (fields of a recipe dataclass).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Sequence

from .errors import ConfigError

__all__ = ["parse_value", "parse_overrides", "apply_overrides"]


def parse_value(text: str) -> Any:
    """Parse one override value: JSON (numbers, true/false/null, lists, quoted strings),
    Python-style ``True``/``False``/``None``, else the bare string itself."""
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.1", "milestones=[32000,48000]"]`` -> ``{"lr": 0.1, "milestones": [32000, 48000]}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "a").replace(".", "a").isalnum():
            raise ConfigError(f"expected key=value, got {pair!r}")
        if key in out:
            raise ConfigError(f"{key!r} given twice")
        out[key] = parse_value(value)
    return out


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a dataclass field's annotation; ints widen to float."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            try:
                return _coerce(key, value, arm)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not {_type_name(annotation)}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value in choices and not isinstance(value, bool):
            return value
        # a bare word that names a choice is that choice: val=none is "none", not Python's None
        word = _BARE_WORDS.get(value) if value is None or isinstance(value, bool) else None
        if word in choices:
            return word
        raise ConfigError(f"{key}: {_shown(value)} is not one of {', '.join(map(repr, choices))}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [1,2], got {value!r}")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        return tuple(_coerce(key, v, item) for v in value)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 64e3 is a fine way to write 64000
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r}")


#: what parse_value made of the bare words true/false/none
_BARE_WORDS = {None: "none", True: "true", False: "false"}


def _shown(value: Any) -> str:
    """``value`` as the user typed it (``none``, not ``None``)."""
    return _BARE_WORDS[value] if value is None or isinstance(value, bool) else repr(value)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the frozen dataclass ``config`` with ``overrides`` applied.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key;
    range checks belong to the dataclass's ``__post_init__``.
    """
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    changes = {k: _coerce(k, v, hints[k]) for k, v in overrides.items()}
    return dataclasses.replace(config, **changes)
