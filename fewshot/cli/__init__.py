"""Command line: one module per command, each with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

``main`` builds the parser from ``COMMANDS`` and is the one place errors are turned into an exit status:
a ``FewShotError`` prints ``fewshot: error: ...`` and returns 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from fewshot._core import __version__
from fewshot.cli import batch, bench, classify, demo, embed, export, index, models, serve, transfer
from fewshot.errors import FewShotError

#: every command, in the order ``fewshot --help`` lists them
COMMANDS: tuple[ModuleType, ...] = (classify, index, batch, embed, demo, bench, transfer, export, models,
                                    serve)
#: old command names → the module that now serves them (deprecated aliases, kept for one release)
ALIASES: dict[str, ModuleType] = {"adapt": transfer}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot", description="Few-shot and zero-shot classification on "
                                     "frozen encoders.")
    parser.add_argument("--version", action="version", version=f"fewshot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    for alias, command in ALIASES.items():
        p = sub.add_parser(alias, help=f"deprecated: use 'fewshot {command.NAME}'",
                           description=f"Deprecated alias of 'fewshot {command.NAME}': {command.HELP}")
        command.add_arguments(p)
        p.set_defaults(run=command.run, deprecated_alias=(alias, command.NAME))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if getattr(args, "deprecated_alias", None):
        old, new = args.deprecated_alias
        warnings.warn(f"'fewshot {old}' is deprecated; use 'fewshot {new}'", DeprecationWarning, stacklevel=1)
        print(f"fewshot: note: 'fewshot {old}' is now 'fewshot {new}'", file=sys.stderr)
    try:
        return int(args.run(args) or 0)
    except FewShotError as exc:
        print(f"fewshot: error: {exc}", file=sys.stderr)
        return 2
