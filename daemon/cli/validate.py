"""``wattshift validate``: check a site file, a policy file, or both, and change nothing.

``wattshift validate site.yaml`` checks the site file (and the policy file it names, if any);
``--policy FILE`` checks that policy file too; a policy file given alone (its ``policy`` is a
name, not a mapping) is recognised by its content. Exit 0 and a summary, or 2 and every problem
with file, line and key. Validating imports no module the site file does not allow
(``policy_modules``; a policy file alone allows none): a policy file is data.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wattshift.daemon.config.policy_file import (
    LoadedPolicy,
    looks_like_policy_file,
    read_policy_file,
    site_policy_modules,
    site_policy_path,
)
from wattshift.daemon.config.yamlfile import FileInvalid, read_document

from .common import EXIT_BAD_INPUT, explain, load_or_explain
from .summary import site_summary


def register(commands: Any) -> None:
    validate = commands.add_parser("validate", help="check a site file and/or a policy file and summarise it")
    validate.add_argument("file", type=Path, help="a site file, or a policy file")
    validate.add_argument("--policy", type=Path, help="a policy file to check as well")
    validate.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    policies: list[Path] = [args.policy] if args.policy else []
    summaries: list[str] = []
    modules: tuple[str, ...] = ()
    if _is_policy_file(args.file):
        policies.insert(0, args.file)
    else:
        site = load_or_explain(args.file)
        if site is None:
            return EXIT_BAD_INPUT
        summaries.append(site_summary(site))
        modules = site_policy_modules(site)
        named = site_policy_path(site, args.file.parent)
        if named is not None and named not in policies:
            policies.insert(0, named)
    for path in policies:
        loaded = _policy_or_explain(path, modules)
        if loaded is None:
            return EXIT_BAD_INPUT
        summaries.append(f"{path}: {loaded.spec.describe()}")
    print("ok")
    for summary in summaries:
        print(summary)
    return 0


def _is_policy_file(path: Path) -> bool:
    try:
        return looks_like_policy_file(read_document(path).data)
    except FileInvalid:
        return False  # the site-file path reports why it cannot be read


def _policy_or_explain(path: Path, modules: tuple[str, ...]) -> LoadedPolicy | None:
    try:
        return read_policy_file(path, modules)
    except FileInvalid as err:
        explain(path, err)
        return None
