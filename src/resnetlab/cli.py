"""The ``resnetlab`` command line: parses arguments, calls the library, prints.

No logic lives here. Every user mistake surfaces as a :class:`ResnetlabError` and ends as
one line on stderr with exit code 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from .errors import ResnetlabError

# Each subcommand is a pair: add_<name>(subparsers) builds its parser and sets func=<handler>.
_COMMANDS: list[Callable[[Any], None]] = []


def command(add: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a subcommand's parser builder (keeps the order of `resnetlab --help`)."""
    _COMMANDS.append(add)
    return add


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


# ----------------------------------------------------------------------------- list / info


@command
def add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'cifar_*'")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> None:
    from .registry import list_models, model_info

    names = list_models(args.pattern)
    if args.json:
        _print_json(names)
        return
    for name in names:
        info = model_info(name)
        print(f"{name:24s} {info.family:14s} {info.paper}")


@command
def add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="params, multiply-adds and layers of one model")
    p.add_argument("model")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model arguments, e.g. variant=v1.5")
    p.add_argument("--input-size", type=int, default=None, help="square input side (default: the model's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> None:
    from .analysis.complexity import describe

    info = describe(args.model, args.overrides, args.input_size)
    if args.json:
        _print_json(info)
        return
    for key, value in info.items():
        if key == "layers":
            print("layers:")
            for line in value:
                print(f"  {line}")
        else:
            print(f"{key}: {value}")


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The full ``resnetlab`` argument parser."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="resnetlab",
        description="Deep residual networks (He et al. 2015): models, training, evaluation, reproduction.",
    )
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ResnetlabError as exc:
        print(f"resnetlab: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"resnetlab: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnetlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
