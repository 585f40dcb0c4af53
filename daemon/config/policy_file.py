"""Policy files: which policy, its options, and its schedule windows, as operators write them.

```yaml
policy: strike-price          # built-in, entry point (wattshift.policies), or package.module:factory
                              # with the module in the site file's policy_modules
description: summer baseline
options: {strike_usd_per_mwh: 95, hysteresis_usd_per_mwh: 5, curtail_after_minutes: 10}
windows:
  - {name: 4cp-peak, cron: "0 15 * 6-9 mon-fri", duration_minutes: 240,
     timezone: America/Chicago, budget_kw: 600}
```

Loading validates the shape with pydantic (every error with file, line and key, through
:mod:`wattshift.daemon.config.yamlfile`), then builds the policy once with its options and once per
window with the window's options, so a plug-in that refuses an option is caught here, named at
the line of that option. Nothing is half-applied: a file either gives a policy or raises
:class:`~wattshift.daemon.config.yamlfile.FileInvalid`.

Reading is guarded (:func:`read_policy_text`): only a regular file of at most
:data:`MAX_POLICY_BYTES` of UTF-8 is read. A name that arrives from outside (the MQTT ``policy``
command) is confined to the site's policy directory first (:func:`confined_policy_path`).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wattshift.policies.base import Policy, PolicyLoadError, carried
from wattshift.policies.catalog import make_policy, policy_factory, policy_from
from wattshift.policies.windows import Window, WindowedPolicy

from .yamlfile import (
    FileInvalid,
    Location,
    Problem,
    decode,
    key_lines,
    parse_model,
    problem_at,
)

# Built-ins (and documented plug-ins) say "... option <key>: <reason>" for a bad option.
_OPTION_ERROR = re.compile(r"\boption ([A-Za-z0-9_.\[\]]+): (.*)", re.DOTALL)
# A policy file is a few hundred bytes; this is far above any real one and keeps a parse short.
MAX_POLICY_BYTES = 64 * 1024
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


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


def parse_policy_file(text: str, file: str, modules: Collection[str] = ()) -> LoadedPolicy:
    """Validate policy-file text and build its policy; raise :class:`FileInvalid` on any error.

    ``modules``: the site file's ``policy_modules``, the only modules a ``package.module:factory``
    name may import."""
    spec = parse_model(text, PolicyFile, file=file)
    lines = key_lines(text)
    problems: list[Problem] = []
    try:
        # An unknown name, a module not allowed or a broken plug-in: one clear problem.
        factory = policy_factory(spec.policy, modules)
    except PolicyLoadError as err:
        raise FileInvalid([problem_at(file, ("policy",), str(err), lines)]) from None

    def build(options: Mapping[str, Any]) -> Policy:
        return policy_from(factory, spec.policy, options)

    def check(options: Mapping[str, Any], where: Location, own: Mapping[str, Any]) -> None:
        try:
            build(options)
        except ValueError as err:  # PolicyLoadError included
            problems.extend(_option_problem(file, line, where, own, lines) for line in str(err).splitlines() or [""])

    check(spec.options, ("options",), spec.options)
    for index, window in enumerate(spec.windows):
        check({**spec.options, **window.options}, ("windows", index, "options"), window.options)
    if problems:
        raise FileInvalid(problems)
    policy: Policy = WindowedPolicy(build, spec.options, spec.windows) if spec.windows else build(spec.options)
    return LoadedPolicy(Path(file), text, spec, carried(policy))


def read_policy_text(path: Path, *, follow_symlinks: bool = True) -> str:
    """The text of a policy file; :class:`FileInvalid` unless it is a regular file of at most
    :data:`MAX_POLICY_BYTES` bytes of UTF-8.

    A FIFO, a device or a directory is refused before it is opened: opening a FIFO waits for a
    writer, ``/dev/zero`` never ends, and opening some devices does something. The open itself
    is non-blocking and the file is checked again once open, in case it was swapped in between.
    """
    where = str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        _regular(where, os.stat(path, follow_symlinks=follow_symlinks))
        fd = os.open(path, flags)
    except OSError as err:
        raise _unreadable(where, f"cannot read: {err.strerror}") from None
    except ValueError:  # a NUL byte in the name
        raise _unreadable(where, "cannot read: not a file name") from None
    with os.fdopen(fd, "rb") as file:
        try:
            _regular(where, os.fstat(fd))
            data = file.read(MAX_POLICY_BYTES + 1)
        except OSError as err:
            raise _unreadable(where, f"cannot read: {err.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise _unreadable(where, f"larger than {MAX_POLICY_BYTES} bytes, the limit for a policy file")
    return decode(data, where)  # UTF-8 or a FileInvalid that says what the bytes look like


def _regular(where: str, st: os.stat_result) -> None:
    for is_kind, kind in _KINDS:
        if is_kind(st.st_mode):
            raise _unreadable(where, f"not a regular file: it is {kind}")
    if not stat.S_ISREG(st.st_mode):
        raise _unreadable(where, "not a regular file")
    if st.st_size > MAX_POLICY_BYTES:
        raise _unreadable(where, f"{st.st_size} bytes, larger than {MAX_POLICY_BYTES}, the limit for a policy file")


def _unreadable(where: str, reason: str) -> FileInvalid:
    return FileInvalid([Problem(where, None, "", reason)])


def confined_policy_path(name: str | os.PathLike[str], policy_dir: Path) -> Path:
    """The file ``name`` names inside ``policy_dir``, symlinks resolved; :class:`FileInvalid`
    unless it is a relative name that stays inside the directory: no absolute path, no ``..``,
    no symlink leading out. For names that arrive from outside (the MQTT ``policy`` command)."""
    text = os.fspath(name)

    def refuse(reason: str) -> FileInvalid:
        return _unreadable(text, f"{reason}; give the name of a policy file in the policy directory {policy_dir}")

    if not text or "\x00" in text:
        raise refuse("not a file name")
    relative = PurePosixPath(text)
    if relative.is_absolute():
        raise refuse("an absolute path is not allowed")
    if ".." in relative.parts:
        raise refuse("'..' is not allowed")
    try:
        root = policy_dir.resolve(strict=True)
        real = (root / relative).resolve(strict=True)
    except OSError as err:
        raise refuse(f"cannot read: {err.strerror}") from None
    except RuntimeError:  # a symlink loop (Python 3.11 and 3.12)
        raise refuse("cannot read: a symlink loop") from None
    if not real.is_relative_to(root):
        raise refuse("it leads out of the policy directory (through a symlink)")
    return real


def read_policy_file(path: Path, modules: Collection[str] = ()) -> LoadedPolicy:
    return parse_policy_file(read_policy_text(path), str(path), modules)


def load_policy_file(path: Path, modules: Collection[str] = ()) -> Policy:
    """The live-ready policy a policy file describes; raises :class:`FileInvalid`."""
    return read_policy_file(path, modules).policy


def policy_for_site(site: Any, base_dir: Path) -> Policy:
    """The site's policy: from its ``policy_file`` (relative to the site file) when it names one,
    else from its inline ``policy: {name, options}``."""
    path = site_policy_path(site, base_dir)
    modules = site_policy_modules(site)
    if path is not None:
        return load_policy_file(path, modules)
    return make_policy(site.policy.name, site.policy.options, modules)


def site_policy_path(site: Any, base_dir: Path) -> Path | None:
    named = getattr(site, "policy_file", None)
    return None if named is None else resolve(named, base_dir)


def site_policy_dir(site: Any, base_dir: Path) -> Path | None:
    """Where the MQTT ``policy`` command may pick a file by name: the site's ``policy_dir``
    (relative to the site file), else the folder of its ``policy_file``; None without either."""
    named = getattr(site, "policy_dir", None)
    if named is not None:
        return resolve(named, base_dir)
    path = site_policy_path(site, base_dir)
    return None if path is None else path.parent


def site_policy_modules(site: Any) -> tuple[str, ...]:
    """The modules a policy may be imported from by ``package.module:factory`` (``policy_modules``)."""
    return tuple(getattr(site, "policy_modules", None) or ())


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
