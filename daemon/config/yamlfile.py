"""Operator-edited YAML files: load them keeping line numbers, and explain every error.

An operator who mistypes a site or policy file must be told which file, which line, which key
and why, for every mistake at once, and nothing may change (DESIGN.md invariant 5). pydantic
gives the key path and the reason; the YAML node tree gives the line.

A file is hostile input too, so reading one is bounded: its size, its nesting, its aliases and
what they expand to, the length of an integer, and the number of problems reported. Whatever the
bytes, loading either gives a validated model or raises :class:`FileInvalid`.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import yaml
import yaml.reader
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

try:  # libyaml scans and parses ~5x faster; the composing and its limits below stay in Python
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

Location = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# A site file for 20,000 miners listed one by one is about 0.4 MiB; by ranges, a few KiB.
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 32  # lists and mappings inside each other, aliases expanded (a deep tree needs ~12)
MAX_ALIASES = 1_000  # *name uses (a merge key per miner group is the heavy real use)
MAX_VALUES = 500_000  # nodes once aliases are expanded: what pydantic and the line map walk
MAX_INT_DIGITS = 40  # no setting needs more; Python refuses to parse 4,300 and more
MAX_PROBLEMS = 100  # reported per file; the rest are counted

log = logging.getLogger("wattshift.files")


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
    """A file was rejected; ``problems`` lists every reason (the first :data:`MAX_PROBLEMS` of
    ``total``, then a line counting the rest)."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
        self.total = len(problems) if total is None else total


class ProblemsAt(ValueError):
    """Raised by a validator that checks several keys against each other (a circuit against its
    parent, a device against the tree), so each problem is reported at its own key and line.

    Locations are relative to where pydantic reports the error (the field a ``field_validator``
    runs on); with ``field`` (that field's name) they are relative to its model instead, for a
    validator that points at the field's siblings.
    """

    def __init__(self, problems: Sequence[tuple[Location, str]], *, field: str | None = None) -> None:
        super().__init__("; ".join(f"{dotted(loc)}: {reason}" for loc, reason in problems))
        self.problems = list(problems)
        self.field = field


@runtime_checkable
class Noticing(Protocol):
    """A model that can be valid yet worth a look (oversubscribed circuits): ``notices()`` gives
    (location, reason) pairs, logged as warnings with their lines."""

    def notices(self) -> Iterable[tuple[Location, str]]: ...


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: its data and the line of every key path."""

    file: str
    data: Any
    lines: dict[Location, int]


def read_text(path: Path) -> str:
    """A file's text, at most :data:`MAX_FILE_BYTES`, decoded as UTF-8; raises :class:`FileInvalid`."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise FileInvalid([Problem(str(path), None, "", f"cannot read: {err.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise FileInvalid([Problem(str(path), None, "", f"larger than {MAX_FILE_BYTES // 2**20} MiB, "
                                   "far more than a site or policy file needs: is it the right file?")])
    return decode(raw, str(path))


def decode(raw: bytes, file: str) -> str:
    """UTF-8 (a byte-order mark allowed), or a problem saying what the bytes look like instead."""
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileInvalid([Problem(file, None, "", "the file is UTF-16 or UTF-32 text: save it as UTF-8")])
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise FileInvalid([Problem(file, line, "", "NUL bytes: is this UTF-16 text or a binary file? "
                                   "save it as UTF-8 text")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise FileInvalid([Problem(file, line, "", f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                                   f"{err.start}): save it as UTF-8")]) from None


def read_document(path: Path) -> Document:
    """Read and parse a YAML file within the limits; raises :class:`FileInvalid`."""
    return parse_document(read_text(path), str(path))


def parse_document(text: str, file: str) -> Document:
    """Parse YAML text within the limits: every duplicate key, or the first syntax error, or a
    limit exceeded raises :class:`FileInvalid`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(file, None, {})
        _check_expansion(node, loader.finished)
        lines: dict[Location, int] = {}
        duplicates: list[Problem] = []
        _walk(node, (), lines, duplicates, file)
        if duplicates:
            raise _capped(duplicates, len(duplicates), file)
        data = loader.construct_document(node)
    except yaml.reader.ReaderError as err:  # a control character; its str() quotes the text
        line = text.count("\n", 0, err.position) + 1
        raise FileInvalid([Problem(file, line, "", f"not valid YAML: character #x{err.character:04x}: "
                                   f"{err.reason}")]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = mark.line + 1 if mark is not None else None
        reason = getattr(err, "problem", None) or str(err)
        raise FileInvalid([Problem(file, at, "", f"not valid YAML: {reason}")]) from None
    finally:
        loader.dispose()
    return Document(file, data, lines)


def load_model(
    path: Path,
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> M:
    """Read ``path`` as YAML and validate it as ``model``; raise :class:`FileInvalid` on any error."""
    return validate(read_document(path), model, context=context, overrides=overrides)


def parse_model(
    text: str,
    model: type[M],
    *,
    file: str,
    context: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> M:
    """Validate YAML text as ``model``; ``overrides`` are keys the program supplies (secrets)."""
    return validate(parse_document(text, file), model, context=context, overrides=overrides)


def validate(
    document: Document,
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> M:
    """Validate a parsed file as ``model``: every problem at its line, or the model (whose
    notices, if it has any, are logged as warnings)."""
    file, data, lines = document.file, document.data, document.lines
    if not isinstance(data, dict):
        raise FileInvalid([Problem(file, 1, "", "expected a mapping of keys at the top level")])
    try:
        result = model.model_validate({**data, **(overrides or {})}, context=context)
    except ValidationError as err:
        raise _capped(list(islice(_problems(err, file, lines), MAX_PROBLEMS + 1)), err.error_count(), file) from None
    except RecursionError:  # a recursive anchor (&a [*a]) is refused while parsing; belt and braces
        raise FileInvalid([Problem(file, None, "", "nested too deeply")]) from None
    if isinstance(result, Noticing):
        for loc, reason in result.notices():
            log.warning("%s", problem_at(file, loc, reason, lines))
    return result


def _capped(problems: list[Problem], total: int, file: str) -> FileInvalid:
    """At most :data:`MAX_PROBLEMS`, then one line counting the rest (a file of junk is not
    worth a screen per key). ``total`` is a lower bound: one error may hold several problems."""
    total = max(total, len(problems))
    if len(problems) <= MAX_PROBLEMS:
        return FileInvalid(problems, total)
    more = Problem(file, None, "", f"... and {total - MAX_PROBLEMS} more problem(s) not shown")
    return FileInvalid([*problems[:MAX_PROBLEMS], more], total)


def _problems(err: ValidationError, file: str, lines: dict[Location, int]) -> Iterable[Problem]:
    for item in err.errors(include_url=False):
        loc = tuple(item["loc"])
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, ProblemsAt):
            base = loc[:-1] if cause.field is not None and loc[-1:] == (cause.field,) else loc
            for sub, reason in cause.problems:
                yield problem_at(file, (*base, *sub), reason, lines)
            continue
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            reason += f" (got {_short(item['input'])})"
        yield Problem(file, _nearest_line(loc, lines), dotted(loc), reason)


def _nearest_line(loc: Location, lines: dict[Location, int]) -> int | None:
    """The line of the key, or of its closest parent that is in the file (a missing key)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _walk(node: yaml.Node, path: Location, lines: dict[Location, int], duplicates: list[Problem], file: str,
          checked: set[int] | None = None) -> None:
    """Record the line of every key path, and every key given twice in one mapping (a shared,
    aliased mapping is checked once)."""
    checked = set() if checked is None else checked
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        fresh = id(node) not in checked
        checked.add(id(node))
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            sub = (*path, name)
            if fresh and isinstance(key, yaml.ScalarNode) and key.tag != MERGE_TAG:
                earlier = first.get((key.tag, key.value))
                if earlier is None:
                    first[key.tag, key.value] = line
                else:
                    duplicates.append(Problem(file, line, dotted(sub), f"given twice (line {earlier} and line "
                                              f"{line}); YAML would silently keep the last: remove one"))
            lines.setdefault(sub, line)
            _walk(value, sub, lines, duplicates, file, checked)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, duplicates, file, checked)


MERGE_TAG = "tag:yaml.org,2002:merge"


class _LimitedComposer(Composer):
    """PyYAML's composer, refusing deep nesting and many aliases as it goes, and noting each
    node as it is finished (children before parents) for :func:`_check_expansion`."""

    # Supplied by the parser this composer is mixed with (see _Loader).
    check_event: Callable[..., bool]
    peek_event: Callable[[], Any]

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.aliases = 0
        self.finished: list[yaml.Node] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name)", self.peek_event().start_mark
                )
            return cast(yaml.Node, super().compose_node(parent, index))
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        try:
            node = cast(yaml.Node, super().compose_node(parent, index))
        finally:
            self.depth -= 1
        if not isinstance(node, yaml.ScalarNode):  # a scalar counts 1 and nests nothing
            self.finished.append(node)
        return node


class _Constructor(SafeConstructor):
    """SafeConstructor whose failures are all YAML errors with a line (Python's own ValueError
    for a 5,000-digit integer or a 13th month would otherwise escape)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as err:
            raise ConstructorError(None, None, f"cannot read this value: {err}", node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(ch.isalnum() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"an integer of {digits} digits (at most {MAX_INT_DIGITS})",
                                   node.start_mark)
        return super().construct_yaml_int(node)


# The stubs type add_constructor for loaders only; a constructor class is what PyYAML takes.
_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)  # type: ignore[type-var]


class _Loader(_LimitedComposer, _Parser, _Constructor, Resolver):
    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        _LimitedComposer.__init__(self)
        _Constructor.__init__(self)
        Resolver.__init__(self)


def _check_expansion(root: yaml.Node, finished: list[yaml.Node]) -> None:
    """Refuse a document whose aliases expand beyond the limits (a "billion laughs") or refer to
    their own anchor (a cycle), before anything walks the expanded tree. Nodes come children
    first, so one pass sizes them all, each once."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    for node in finished:
        children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
        total, tallest = 1, 1
        for child in children:
            if isinstance(child, yaml.ScalarNode):
                total += 1
                continue
            if id(child) not in size:
                raise ComposerError(None, None, "an alias (*name) inside its own anchor (&name)", node.start_mark)
            total += size[id(child)]
            tallest = max(tallest, height[id(child)])
        size[id(node)] = min(total, MAX_VALUES + 1)
        height[id(node)] = tallest + 1
        if height[id(node)] > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                                node.start_mark)
    if size.get(id(root), 1) > MAX_VALUES:
        raise ComposerError(None, None, f"the aliases (*name) expand to more than {MAX_VALUES:,} values",
                            root.start_mark)


def dotted(loc: Location) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long for str(); the loader refuses those, a caller may not
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def key_lines(text: str) -> dict[Location, int]:
    """The line of every key path in YAML text, for errors found after validation (a plug-in
    refusing an option); ``{}`` when the text is not YAML (that error is reported elsewhere)."""
    try:
        return parse_document(text, "").lines
    except FileInvalid:
        return {}


def problem_at(file: str, loc: Location, reason: str, lines: dict[Location, int]) -> Problem:
    """A problem at ``loc`` (the nearest key the file has), in the words of :class:`Problem`."""
    return Problem(file, _nearest_line(loc, lines), dotted(loc), reason)
