"""Policy files: which policy, its options, and its schedule windows, as operators write them.

```yaml
policy: strike-price          # built-in, entry point (wattshift.policies) or package.module:factory
description: summer baseline
options: {strike_usd_per_mwh: 95, hysteresis_usd_per_mwh: 5, curtail_after_minutes: 10}
windows:
  - {name: 4cp-peak, cron: "0 15 * 6-9 mon-fri", duration_minutes: 240,
     timezone: America/Chicago, budget_kw: 600}
```

Loading validates the shape with pydantic (every error with file, line and key, through
:mod:`wattshift.daemon.yamlfile`), then builds the policy once with its options and once per
window with the window's options, so a plug-in that refuses an option is caught here, named at
the line of that option. Nothing is half-applied: a file either gives a policy or raises
:class:`~wattshift.daemon.yamlfile.FileInvalid`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wattshift.policies.base import Policy, PolicyLoadError, build_policy, carried, make_policy, policy_factory
from wattshift.policies.windows import Window, WindowedPolicy

from .yamlfile import FileInvalid, Location, Problem, key_lines, parse_model, problem_at, read_text

# Built-ins (and documented plug-ins) say "... option <key>: <reason>" for a bad option.
_OPTION_ERROR = re.compile(r"\boption ([A-Za-z0-9_.\[\]]+): (.*)", re.S)


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1)
    description: str = ""
    options: dict[str, Any] = {}
    windows: list[Window] = []

    @field_validator("windows")
    @classmethod
    def _unique_names(cls, value: list[Window]) -> list[Window]:
        names = [w.name for w in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"window names must be unique: {twice}")
        return value

    def describe(self) -> str:
        windows = ", ".join(w.name for w in self.windows) or "none"
        return f"policy {self.policy} ({len(self.options)} option(s); windows: {windows})"


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy file that passed every check: the policy, and what it was made from."""

    path: Path
    text: str
    spec: PolicyFile
    policy: Policy


def parse_policy_file(text: str, file: str) -> LoadedPolicy:
    """Validate policy-file text and build its policy; raise :class:`FileInvalid` on any error."""
    spec = parse_model(text, PolicyFile, file=file)
    lines = key_lines(text)
    problems: list[Problem] = []
    try:
        policy_factory(spec.policy)  # an unknown name or a broken plug-in: one clear problem
    except PolicyLoadError as err:
        raise FileInvalid([problem_at(file, ("policy",), str(err), lines)]) from None

    def check(options: Mapping[str, Any], where: Location, own: Mapping[str, Any]) -> None:
        try:
            build_policy(spec.policy, options)
        except ValueError as err:  # PolicyLoadError included
            problems.extend(_option_problem(file, line, where, own, lines) for line in str(err).splitlines() or [""])

    check(spec.options, ("options",), spec.options)
    for index, window in enumerate(spec.windows):
        check({**spec.options, **window.options}, ("windows", index, "options"), window.options)
    if problems:
        raise FileInvalid(problems)
    if spec.windows:
        policy: Policy = WindowedPolicy(lambda o: build_policy(spec.policy, o), spec.options, spec.windows)
    else:
        policy = build_policy(spec.policy, spec.options)
    return LoadedPolicy(Path(file), text, spec, carried(policy))


def read_policy_file(path: Path) -> LoadedPolicy:
    return parse_policy_file(read_text(path), str(path))  # bounded, UTF-8 or FileInvalid


def load_policy_file(path: Path) -> Policy:
    """The live-ready policy a policy file describes; raises :class:`FileInvalid`."""
    return read_policy_file(path).policy


def policy_for_site(site: Any, base_dir: Path) -> Policy:
    """The site's policy: from its ``policy_file`` (relative to the site file) when it names one,
    else from its inline ``policy: {name, options}``."""
    path = site_policy_path(site, base_dir)
    if path is not None:
        return load_policy_file(path)
    return make_policy(site.policy.name, site.policy.options)


def site_policy_path(site: Any, base_dir: Path) -> Path | None:
    named = getattr(site, "policy_file", None)
    return None if named is None else resolve(named, base_dir)


def resolve(path: Path | str, base_dir: Path) -> Path:
    """A path from the site file: relative ones are relative to the site file's folder."""
    path = Path(path)
    return path if path.is_absolute() else base_dir / path


def looks_like_policy_file(data: object) -> bool:
    """A mapping whose ``policy`` is a string (a site file's ``policy`` is a mapping)."""
    return isinstance(data, dict) and isinstance(data.get("policy"), str) and "budget_kw" not in data


def _option_problem(
    file: str, text: str, where: Location, own: Mapping[str, Any], lines: dict[Location, int]
) -> Problem:
    match = _OPTION_ERROR.search(text)
    if match is None:
        return problem_at(file, where, text, lines)
    key = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", match.group(1)) if p)
    # A window's merged options may fail on a key the window did not set: point at the base.
    loc = (*where, *key) if key and key[0] in own else ("options", *key)
    return problem_at(file, loc, match.group(2), lines)
