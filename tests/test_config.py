"""key=value overrides: parsing and type checking (nanoGPT-style configuration)."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resnetlab.config import apply_overrides, parse_overrides, parse_value
from resnetlab.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Toy:
    lr: float = 0.1
    iterations: int = 64_000
    nesterov: bool = False
    model: str = "cifar_resnet20"
    milestones: tuple[int, ...] = (32_000, 48_000)
    schedule: Literal["multistep", "cosine"] = "multistep"
    warmup: Optional[float] = None


def test_parse_values() -> None:
    assert parse_overrides(["lr=0.1", "iterations=64e3", "nesterov=true", "model=resnet50",
                            "milestones=[1,2]", "warmup=none"]) == {
        "lr": 0.1, "iterations": 64000.0, "nesterov": True, "model": "resnet50", "milestones": [1, 2], "warmup": None,
    }
    assert parse_value("True") is True and parse_value('"007"') == "007" and parse_value("v1.5") == "v1.5"


def test_apply_overrides_types() -> None:
    cfg = apply_overrides(Toy(), parse_overrides(["lr=1", "iterations=64e3", "milestones=[10,20]", "warmup=0.01"]))
    assert cfg == Toy(lr=1.0, iterations=64000, milestones=(10, 20), warmup=0.01)
    assert isinstance(cfg.lr, float) and isinstance(cfg.iterations, int)


@pytest.mark.parametrize(
    "pairs, fragment",
    [
        (["lrr=0.1"], "unknown key(s) lrr"),
        (["lr=fast"], "lr: expected float"),
        (["iterations=1.5"], "iterations: expected int"),
        (["nesterov=1"], "nesterov: expected bool"),
        (["schedule=linear"], "schedule: 'linear' is not one of"),
        (["milestones=3"], "milestones: expected a list"),
        (["lr"], "expected key=value"),
        (["lr=1", "lr=2"], "given twice"),
    ],
)
def test_bad_overrides_name_the_key(pairs: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        apply_overrides(Toy(), parse_overrides(pairs))
    assert fragment in str(info.value)


keys = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
values = st.one_of(
    st.integers(-10**9, 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(st.characters(codec="ascii", exclude_characters="\"\\", min_codepoint=33), min_size=1, max_size=10),
    st.lists(st.integers(0, 10**6), max_size=4),
)


@given(st.dictionaries(keys, values, max_size=6))
def test_parse_roundtrip_property(mapping: dict) -> None:
    pairs = [f"{k}={json.dumps(v)}" for k, v in mapping.items()]
    assert parse_overrides(pairs) == mapping


@given(st.text(max_size=30))
def test_parse_never_crashes(text: str) -> None:
    try:
        parse_overrides([text])
    except ConfigError:
        pass
