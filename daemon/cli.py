"""The ``wattshift`` command: one sub-command per module, each registering itself.

Exit codes: 0 success, 1 runtime failure, 2 bad input (a file or an option), like argparse.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import demo_cmd, journal_cmd, run_cmd
from .cli_common import EXIT_BAD_INPUT, load_or_explain
from .summary import site_summary


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
    validate = commands.add_parser("validate", help="check a site file and summarise it")
    validate.add_argument("file", type=Path)
    validate.set_defaults(func=_validate)
    run_cmd.register(commands)
    journal_cmd.register(commands)
    demo_cmd.register(commands)
    return parser


def _validate(args: argparse.Namespace) -> int:
    site = load_or_explain(args.file)
    if site is None:
        return EXIT_BAD_INPUT
    print("ok")
    print(site_summary(site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
