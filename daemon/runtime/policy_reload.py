"""Hot reload of the policy file: on change (mtime polled every second), on SIGHUP, and on the
MQTT ``policy`` command, which picks another file by name from the policy directory.

A reload reads and fully checks the file before anything changes. The reading, parsing and
building happen in a thread, under a deadline: a file on a hung mount or a slow parse must not
stall the control loop, which keeps ticking (and applying cuts) meanwhile. Only a regular file
under the size cap is read (:func:`~wattshift.daemon.config.policy_file.read_policy_text`); a name from
a command is confined to the policy directory (no absolute path, no ``..``, no symlink leading
out), on the switch and on every reload after it.

A bad file is refused: logged, journaled with every problem, counted
(``wattshift_policy_reloads_total{result="rejected"}``), and the running policy stays
(DESIGN.md invariant 5). *Every* failure is refused that way, a file that is not UTF-8 or a
plug-in that crashes included, and the watcher carries on: a later good edit is picked up.
Refusals never quote the file: a key is shown only when it is a plain name, and no value is
shown, since the reply goes to whoever sent the command and the journal is read by many
(``wattshift validate`` shows the operator everything). A good file replaces
``controller.policy`` (keeping a stateful policy's memory when the policy is the same kind), is
journaled with the unified diff of the file, counted, and the loop is asked to plan again at
once, so the change takes effect in the next tick.

Polling the mtime is enough here (a human edits the file; a second is fast enough) and needs no
extra dependency; an editor that writes in two steps at worst gives one refused reload followed
by an accepted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter

from wattshift.daemon.config.policy_file import (
    LoadedPolicy,
    confined_policy_path,
    looks_like_policy_file,
    parse_policy_file,
    read_policy_text,
    site_policy_dir,
    site_policy_modules,
    site_policy_path,
)
from wattshift.daemon.config.yamlfile import FileInvalid, Problem, parse_document
from wattshift.policies.base import Carried, Policy

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# Reading and checking a policy file (at most 64 KiB) takes milliseconds; this is for a hung
# mount or a pathological file, not for a busy machine.
READ_DEADLINE_SECONDS = 10.0
DIFF_MAX_CHARS = 20_000  # a journal entry stays readable; a whole rewrite is still summarised
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\[\]-]{1,100}")
_VALUE = re.compile(r" \(got .*\)$", re.DOTALL)  # how yamlfile and the policies quote a value
T = TypeVar("T")


class Reloadable(Protocol):
    """What the reloader needs from the controller."""

    policy: Policy

    @property
    def recorder(self) -> Any: ...  # a wattshift.daemon.control.recorder.Recorder

    def request_replan(self, reason: str) -> None: ...


@dataclass(frozen=True)
class ReloadResult:
    accepted: bool
    message: str
    problems: tuple[str, ...] = field(default=())
    changed: bool = False


def reload_counter(registry: CollectorRegistry) -> Counter:
    counter = Counter("wattshift_policy_reloads", "Policy file reloads, by result", ["result"], registry=registry)
    for result in ("accepted", "rejected"):
        counter.labels(result)  # both series exist from the start, at 0
    return counter


class PolicyReloader:
    """Follows one policy file: the site's ``policy_file`` at first, the last one switched to
    by name after that. ``policy_dir`` (default: the folder of ``path``) is where names may
    point; ``modules`` are the site's ``policy_modules``."""

    def __init__(
        self,
        controller: Reloadable,
        path: Path,
        *,
        policy_dir: Path | None = None,
        modules: Collection[str] = (),
        registry: CollectorRegistry | None = None,
        poll_seconds: float = POLL_SECONDS,
        deadline_seconds: float = READ_DEADLINE_SECONDS,
    ) -> None:
        self.controller = controller
        self.path = path
        self.policy_dir = policy_dir if policy_dir is not None else path.parent
        self.modules = tuple(modules)
        self.poll_seconds = poll_seconds
        self.deadline_seconds = deadline_seconds
        self.counter = reload_counter(registry) if registry is not None else None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ReloadResult]] = set()
        # None: ``path`` is the site file's own choice; a name: ``path`` was picked by a command,
        # and every read of it is confined to ``policy_dir`` again.
        self._name: str | None = None
        self._reading: asyncio.Future[Any] | None = None  # a read that outlived its deadline
        self._stamp = _stamp(path)
        # The file as the running policy was built from it: the "before" side of every diff.
        self._text = _read_or_empty(path)

    # -- triggers -------------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll the file until ``stop`` is set; reload when its mtime, size or inode change.

        Nothing that goes wrong in one reload ends the watcher: it is logged and polling goes on.
        """
        while not stop.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation
            # that ends this watcher when it lands as the wait completes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await stop.wait()
            if stop.is_set():
                return
            try:
                if _stamp(self.path) != self._stamp:
                    await self.reload("file changed")
            except Exception:  # reload refuses rather than raises; this is the last line of defence
                log.exception("policy file watcher: reloading %s failed; still watching it", self.path)

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``systemctl reload`` sends SIGHUP: reload from the event loop, never in the handler."""
        (loop or asyncio.get_running_loop()).add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the work -------------------------------------------------------------------------------

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Re-read the policy file being followed."""
        async with self._lock:
            return await self._load(self._name, reason)

    async def switch_policy(self, name: str | os.PathLike[str], *, reason: str = "switch requested") -> ReloadResult:
        """Run the policy file ``name`` (relative to the policy directory) from the next tick, if
        it passes every check.

        An absolute path, ``..`` or a symlink leading out of the directory is refused before
        anything is read. On success the reloader follows that file from then on (changes and
        SIGHUP); on failure nothing changes, not even the file being watched.
        """
        async with self._lock:
            return await self._load(os.fspath(name), reason)

    async def _load(self, name: str | None, reason: str) -> ReloadResult:
        current = name == self._name
        shown = str(self.path) if name is None else name
        before = _stamp(self.path) if current else None
        try:
            path, stamp, loaded = await self._off_loop(
                _read_policy, name, self.path, self.policy_dir, self.modules)
        except FileInvalid as err:
            problems = err.problems
        except TimeoutError:
            problems = [Problem(shown, None, "", f"not read and checked within {self.deadline_seconds:g} s "
                                                 "(a hung file system?); try again later")]
        except _StillReading:
            problems = [Problem(shown, None, "", "an earlier read of a policy file has not finished "
                                                 "(a hung file system?); try again later")]
        except Exception as err:  # a plug-in (or this code) failing oddly: refused all the same
            log.exception("policy file %s: unexpected error while loading it", shown)
            kind = str(err) if isinstance(err, _Crashed) else type(err).__name__
            problems = [Problem(shown, None, "", f"could not be loaded: {kind} (see the log)")]
        else:
            return await self._accepted(path, name, reason, loaded, stamp)
        if current:
            self._stamp = before  # do not refuse the same bytes every second
        return await self._rejected(shown, reason, problems)

    async def _off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a thread, within the deadline. A daemon thread, not the default
        executor: a read stuck in the kernel must neither use up the executor's threads nor
        hold up the daemon's exit. At most one such read is left behind at a time."""
        if self._reading is not None and not self._reading.done():
            raise _StillReading
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, Exception | None]] = loop.create_future()

        def run() -> None:
            try:
                outcome: tuple[Any, Exception | None] = (work(*args), None)
            except Exception as err:
                outcome = (None, err)
            except BaseException as err:  # a plug-in calling sys.exit() is a failure, not an exit
                outcome = (None, _Crashed(type(err).__name__))
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, outcome)

        threading.Thread(target=run, name="policy-file-read", daemon=True).start()
        self._reading = future
        async with asyncio.timeout(self.deadline_seconds):
            result, error = await asyncio.shield(future)  # a timeout leaves the read running
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

    async def _rejected(self, shown: str, reason: str, problems: list[Problem]) -> ReloadResult:
        lines = tuple(_without_contents(p) for p in problems)
        message = (f"policy file {shown} refused ({reason}): {len(lines)} problem(s); "
                   f"still running {self.controller.policy.name}")
        log.error("%s\n  %s", message, "\n  ".join(lines))
        if self.counter is not None:
            self.counter.labels("rejected").inc()
        await self.controller.recorder.event(message, {"file": shown, "result": "rejected",
                                                       "reason": reason, "problems": list(lines)})
        return ReloadResult(False, message, lines)

    async def _accepted(
        self, path: Path, name: str | None, reason: str, loaded: LoadedPolicy, stamp: object
    ) -> ReloadResult:
        before_text = self._text
        previous = self.controller.policy
        self.path, self._name, self._stamp, self._text = path, name, stamp, loaded.text
        if loaded.text == before_text:
            message = f"policy file {path} unchanged ({reason})"
            log.info("%s", message)
            return ReloadResult(True, message)
        if isinstance(loaded.policy, Carried):
            loaded.policy.adopt(previous)
        self.controller.policy = loaded.policy
        diff = unified_diff(before_text, loaded.text, str(path))
        message = f"policy file {path} accepted ({reason}): {previous.name} -> {loaded.policy.name}"
        log.info("%s\n%s", message, diff)
        await self.controller.recorder.event(message, {"file": str(path), "result": "accepted", "reason": reason,
                                                       "policy": loaded.policy.name, "diff": diff})
        if self.counter is not None:
            self.counter.labels("accepted").inc()
        self.controller.request_replan("policy reloaded")
        return ReloadResult(True, message, changed=True)


class _StillReading(Exception):
    """A read that outlived its deadline is still in its thread."""


class _Crashed(Exception):
    """The read raised something that is not an Exception (SystemExit, KeyboardInterrupt)."""


def _settle(future: asyncio.Future[T], outcome: T) -> None:
    if not future.done():
        future.set_result(outcome)


def _read_policy(
    name: str | None, path: Path, policy_dir: Path, modules: tuple[str, ...]
) -> tuple[Path, object, LoadedPolicy]:
    """Off the loop: the file to follow, its stamp before the read, and its checked policy.
    ``name`` None reads ``path`` (the site file's choice); a name is confined to ``policy_dir``."""
    if name is None:
        real = path
    else:
        real = confined_policy_path(name, policy_dir)
        path = policy_dir / name
    stamp = _stamp(path)
    text = read_policy_text(real, follow_symlinks=name is None)
    if name is not None and not _is_policy_text(text, str(path)):
        # The directory may hold other files (the site file, its secrets): say nothing of them,
        # not even the names of their keys.
        raise FileInvalid([Problem(str(path), None, "", "not a policy file (no 'policy:' name, "
                                                         "or it does not parse: `wattshift validate` says why)")])
    return path, stamp, parse_policy_file(text, str(path), modules)


def _is_policy_text(text: str, file: str) -> bool:
    try:
        return looks_like_policy_file(parse_document(text, file).data)
    except FileInvalid:
        return False


def _without_contents(problem: Problem) -> str:
    """The problem without what the file says: no value, and a key only if it is a plain name
    (an arbitrary file's "keys" are its lines)."""
    key = problem.key if not problem.key or _PLAIN_KEY.fullmatch(problem.key) else "(key not shown)"
    return str(Problem(problem.file, problem.line, key, _VALUE.sub("", problem.reason)))


@contextlib.asynccontextmanager
async def policy_reloading(
    controller: Reloadable, site: Any, base_dir: Path, registry: CollectorRegistry | None
) -> AsyncIterator[PolicyReloader | None]:
    """For ``wattshift run``: watch the site's policy file and reload it on SIGHUP.

    Without a ``policy_file`` SIGHUP is still caught (its default action would kill the
    daemon on ``systemctl reload``) and says there is nothing to reload.
    """
    loop = asyncio.get_running_loop()
    path = site_policy_path(site, base_dir)
    if path is None:
        loop.add_signal_handler(signal.SIGHUP, log.warning,
                                "SIGHUP: the site file names no policy_file; nothing to reload")
        try:
            yield None
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
        return
    reloader = PolicyReloader(controller, path, policy_dir=site_policy_dir(site, base_dir),
                              modules=site_policy_modules(site), registry=registry)
    reloader.install_sighup(loop)
    stop = asyncio.Event()
    watcher = asyncio.create_task(reloader.watch(stop))
    try:
        yield reloader
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        stop.set()
        await watcher


def unified_diff(before: str, after: str, name: str) -> str:
    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                 f"{name} (before)", f"{name} (after)")
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if len(text) > DIFF_MAX_CHARS:
        text = text[:DIFF_MAX_CHARS] + f"\n... ({len(text) - DIFF_MAX_CHARS} more characters)\n"
    return text


def _stamp(path: Path) -> object:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read_or_empty(path: Path) -> str:
    try:
        return read_policy_text(path)
    except FileInvalid:
        return ""
