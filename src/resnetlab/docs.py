"""Generated parts of README.md: the model table, computed from the registry.

``python -m resnetlab.docs README.md`` (``make readme``) rewrites the text between
``<!-- models:start -->`` and ``<!-- models:end -->``; ``--check`` only reports whether it is current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .analysis.complexity import complexity
from .registry import create_model, list_models, model_info

START, END = "<!-- models:start -->", "<!-- models:end -->"


def model_table() -> str:
    """Markdown table: name, family, params, GMACs at the model's input size, paper reference."""
    rows = [
        "| model | family | params | GMACs | input | paper |",
        "|---|---|---:|---:|---|---|",
    ]
    for name in list_models():
        info = model_info(name)
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            counts = complexity(create_model(name), info.input_size)
        side = info.input_size[1]
        rows.append(
            f"| `{name}` | {info.family} | {counts['params'] / 1e6:.2f} M | {counts['macs'] / 1e9:.3f} "
            f"| {side}x{side} | {info.paper} |"
        )
    return "\n".join(rows)


def render(text: str) -> str:
    """``text`` with its generated block replaced by the current table."""
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"README markers {START} ... {END} not found")
    return f"{head}{START}\n{model_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    old = args.readme.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{args.readme}: model table out of date; run `make readme`", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
