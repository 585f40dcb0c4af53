"""What every sub-command shares: loading a site file and explaining why it was refused."""

from __future__ import annotations

import sys
from pathlib import Path

from wattshift.daemon.config.site import SiteConfig, load_site
from wattshift.daemon.config.yamlfile import FileInvalid

EXIT_BAD_INPUT = 2


def load_or_explain(path: Path) -> SiteConfig | None:
    """The site file, or every problem with it printed to stderr (then None)."""
    try:
        return load_site(path)
    except FileInvalid as err:
        explain(path, err)
        return None


def explain(path: Path, err: FileInvalid) -> None:
    """Every problem with a refused file, on stderr, then one line saying nothing changed."""
    for problem in err.problems:
        print(problem, file=sys.stderr)
    print(f"{path}: {err.total} problem(s); nothing was changed", file=sys.stderr)
