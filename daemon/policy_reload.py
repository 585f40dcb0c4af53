"""Hot reload of the policy file: on change (mtime polled every second) and on SIGHUP.

A reload reads and fully checks the file (:func:`~wattshift.daemon.policy_file.read_policy_file`)
before anything changes. A bad file is refused: logged, journaled with every problem, counted,
and the running policy stays (DESIGN.md invariant 5). A good one replaces ``controller.policy``
(keeping a stateful policy's memory when the policy is the same kind), is journaled with the
unified diff of the file, counted, and the loop is asked to plan again at once, so the change
takes effect in the next tick.

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
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from wattshift.policies.base import Carried, Policy

from .policy_file import LoadedPolicy, read_policy_file, site_policy_path
from .yamlfile import FileInvalid

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
DIFF_MAX_CHARS = 20_000  # a journal entry stays readable; a whole rewrite is still summarised


class Reloadable(Protocol):
    """What the reloader needs from the controller."""

    policy: Policy
    recorder: Any  # wattshift.daemon.recorder.Recorder

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
    def __init__(
        self,
        controller: Reloadable,
        path: Path,
        *,
        registry: CollectorRegistry | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.controller = controller
        self.path = path
        self.poll_seconds = poll_seconds
        self.counter = reload_counter(registry) if registry is not None else None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ReloadResult]] = set()
        self._stamp = _stamp(path)
        # The file as the running policy was built from it: the "before" side of every diff.
        self._text = _read_or_empty(path)

    # -- triggers -------------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll the file until ``stop`` is set; reload when its mtime, size or inode change."""
        while not stop.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation
            # that ends this watcher when it lands as the wait completes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await stop.wait()
            if stop.is_set():
                return
            if _stamp(self.path) != self._stamp:
                await self.reload("file changed")

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``systemctl reload`` sends SIGHUP: reload from the event loop, never in the handler."""
        (loop or asyncio.get_running_loop()).add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the work -------------------------------------------------------------------------------

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Re-read the current policy file."""
        return await self.switch_policy(self.path, reason=reason)

    async def switch_policy(self, path: Path | str, *, reason: str = "switch requested") -> ReloadResult:
        """Run the policy in ``path`` from the next tick, if it passes every check.

        On success the reloader follows ``path`` from then on (changes and SIGHUP); on failure
        nothing changes, not even the file being watched.
        """
        path = Path(path)
        async with self._lock:
            stamp = _stamp(path)
            try:
                loaded = read_policy_file(path)
            except FileInvalid as err:
                if path == self.path:
                    self._stamp = stamp  # do not refuse the same bytes every second
                return await self._rejected(path, reason, err)
            return await self._accepted(path, reason, loaded, stamp)

    async def _rejected(self, path: Path, reason: str, err: FileInvalid) -> ReloadResult:
        problems = tuple(str(p) for p in err.problems)
        message = (f"policy file {path} refused ({reason}): {len(problems)} problem(s); "
                   f"still running {self.controller.policy.name}")
        log.error("%s\n  %s", message, "\n  ".join(problems))
        await self.controller.recorder.event(message, {"file": str(path), "result": "rejected",
                                                       "reason": reason, "problems": list(problems)})
        if self.counter is not None:
            self.counter.labels("rejected").inc()
        return ReloadResult(False, message, problems)

    async def _accepted(self, path: Path, reason: str, loaded: LoadedPolicy, stamp: object) -> ReloadResult:
        before_text = self._text if path == self.path else _read_or_empty(self.path)
        previous = self.controller.policy
        self.path, self._stamp, self._text = path, stamp, loaded.text
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
    reloader = PolicyReloader(controller, path, registry=registry)
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
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
