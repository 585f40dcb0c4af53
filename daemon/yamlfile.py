"""Operator-edited YAML files: load them keeping line numbers, and explain every error.

An operator who mistypes a site or policy file must be told which file, which line, which key
and why, for every mistake at once, and nothing may change (DESIGN.md invariant 5). pydantic
gives the key path and the reason; the YAML node tree gives the line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Location = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file, in the words an operator needs."""

    file: str
    line: int | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.reason}"


class FileInvalid(Exception):
    """A file was rejected; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_model(
    path: Path,
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> M:
    """Read ``path`` as YAML and validate it as ``model``; raise :class:`FileInvalid` on any error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FileInvalid([Problem(str(path), None, "", f"cannot read: {err.strerror}")]) from None
    return parse_model(text, model, file=str(path), context=context, overrides=overrides)


def parse_model(
    text: str,
    model: type[M],
    *,
    file: str,
    context: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> M:
    """Validate YAML text as ``model``; ``overrides`` are keys the program supplies (secrets)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(err, "problem", None) or str(err)
        raise FileInvalid([Problem(file, line, "", f"not valid YAML: {reason}")]) from None
    if not isinstance(data, dict):
        raise FileInvalid([Problem(file, 1, "", "expected a mapping of keys at the top level")])
    lines = dict(_key_lines(node, ()))
    try:
        return model.model_validate({**data, **(overrides or {})}, context=context)
    except ValidationError as err:
        raise FileInvalid(list(_problems(err, file, lines))) from None


def _problems(err: ValidationError, file: str, lines: dict[Location, int]) -> Iterable[Problem]:
    for item in err.errors(include_url=False):
        loc = tuple(item["loc"])
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            reason += f" (got {_short(item['input'])})"
        yield Problem(file, _nearest_line(loc, lines), _dotted(loc), reason)


def _nearest_line(loc: Location, lines: dict[Location, int]) -> int | None:
    """The line of the key, or of its closest parent that is in the file (a missing key)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _key_lines(node: yaml.Node | None, path: Location) -> Iterable[tuple[Location, int]]:
    if node is None:
        return
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            yield sub, key.start_mark.line + 1
            yield from ((p, n) for p, n in _key_lines(value, sub) if p != sub)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _key_lines(item, (*path, index))


def _dotted(loc: Location) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_lines(text: str) -> dict[Location, int]:
    """The line of every key path in YAML text, for errors found after validation (a plug-in
    refusing an option); ``{}`` when the text is not YAML (that error is reported elsewhere)."""
    try:
        return dict(_key_lines(yaml.compose(text, Loader=yaml.SafeLoader), ()))
    except yaml.YAMLError:
        return {}


def problem_at(file: str, loc: Location, reason: str, lines: dict[Location, int]) -> Problem:
    """A problem at ``loc`` (the nearest key the file has), in the words of :class:`Problem`."""
    return Problem(file, _nearest_line(loc, lines), _dotted(loc), reason)
