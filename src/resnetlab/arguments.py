"""How every ``resnetlab`` command line is parsed, sub-commands nested or not.

- Options and ``key=value`` words may come in any order after the command
  (``train paper_cifar --data X model=cifar_resnet56``, ``detect train R --out D iterations=4``).
- A ``key=value ...`` list (a ``nargs="*"`` positional) may be empty.
- :func:`add_run_options` gives a command that runs networks ``--device`` and ``--threads``; on
  a command that takes ``key=value`` they are the keys ``device=`` and ``threads=`` (given both
  ways, the key is refused as given twice).

Plain data and argparse only: building and parsing imports no torch.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Iterator, Sequence

__all__ = ["DEVICE_HELP", "LibraryNames", "add_run_options", "parse", "subcommands"]

DEVICE_HELP = "auto (CUDA if available, the default), cpu, cuda, cuda:N or mps"


class LibraryNames(Sequence[str]):
    """The names a library module lists (``LibraryNames("resnetlab.evaluate", "PROTOCOLS")``) as an
    argparse ``choices``: the module is imported only when a value is checked or the command's help
    printed, so the names have one home and ``resnetlab --help`` imports nothing heavy."""

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    def _names(self) -> list[str]:
        return list(getattr(importlib.import_module(self.module), self.attribute))

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def add_run_options(parser: argparse.ArgumentParser, *, as_overrides: bool = False) -> None:
    """``--device D`` and ``--threads N`` on a command that runs networks; with ``as_overrides``
    they become the command's ``device=D`` and ``threads=N`` overrides (see :func:`parse`)."""
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: all cores minus the load already on them, one at least)")
    if as_overrides:
        parser.set_defaults(options_as_overrides=("device", "threads"))


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The parser's sub-command action (None for a command without sub-commands)."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _optional_lists(parser: argparse.ArgumentParser) -> None:
    """Every ``nargs="*"`` positional in the tree may be empty (argparse otherwise lists a
    ``key=value`` word among 'the following arguments are required')."""
    for action in parser._actions:
        if action.nargs == argparse.ZERO_OR_MORE and not action.option_strings:
            action.required = False
            if action.default is None:
                action.default = []
    sub = subcommands(parser)
    for child in (sub.choices.values() if sub is not None else ()):
        _optional_lists(child)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` with ``parser``: options and positionals intermixed after the innermost
    sub-command (argparse's own intermixed parsing refuses parsers with sub-commands, so the
    sub-commands are walked first), then the run options folded into the overrides."""
    argv = list(argv)
    _optional_lists(parser)
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf, rest, chosen = parser, argv, {}
        while (sub := subcommands(leaf)) is not None:
            name = getattr(args, sub.dest)
            rest = rest[rest.index(name) + 1:]
            chosen[sub.dest] = name
            leaf = sub.choices[name]
        args = leaf.parse_intermixed_args(rest, namespace=argparse.Namespace(**chosen))
    for key in getattr(args, "options_as_overrides", ()):
        if getattr(args, key) is not None:
            args.overrides = [*args.overrides, f"{key}={getattr(args, key)}"]
    return args
