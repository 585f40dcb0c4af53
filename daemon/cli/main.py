"""The ``wattshift`` command: one sub-command per module, each registering itself.

Exit codes: 0 success, 1 runtime failure, 2 bad input (a file or an option), like argparse.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import agent as agent_cmd
from . import backtest as backtest_cmd
from . import demo as demo_cmd
from . import journal as journal_cmd
from . import run as run_cmd
from . import validate as validate_cmd
from .common import EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # pyasic calls basicConfig at import; ours wins
    )
    code: int = args.func(args)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattshift",
        description="Moves a mining site's power budget between ASIC miners and AI GPUs, safely.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    validate_cmd.register(commands)
    run_cmd.register(commands)
    journal_cmd.register(commands)
    demo_cmd.register(commands)
    backtest_cmd.register(commands)
    agent_cmd.register(commands)
    return parser

