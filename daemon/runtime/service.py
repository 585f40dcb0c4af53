"""systemd integration: the sd_notify protocol and a watchdog that vouches for the control loop.

The protocol is a few ``KEY=value`` lines in one datagram to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract address written with a leading ``@``). It is written
here by hand, as most daemons do: the PyPI packages for it are either unmaintained or pull in
libsystemd bindings for three lines of socket code. Outside systemd the variable is unset and
every call is a no-op, so the daemon runs the same by hand, in tests and in the demo.

The watchdog pings ``WATCHDOG=1`` every ``WatchdogSec/2`` only while the control loop is
healthy: its last tick finished recently enough (see ``LoopHealth``). A loop that hangs, or an
event loop blocked by a bug, stops the pings and systemd restarts the service; a daemon that is
alive but no longer controlling the site is exactly what the watchdog is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wattshift.daemon.config.site import SiteConfig

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Notifier:
    """Sends sd_notify messages; every method is a no-op when there is no socket to send to."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        if self.address is not None:
            if not (self.address.startswith("/") or self.address.startswith("@")):
                # systemd only ever hands out these two forms; anything else is a misconfiguration.
                raise ValueError(f"NOTIFY_SOCKET={self.address!r}: must be an absolute path or an @abstract name")
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never let a slow reader block the event loop: a dropped ping is better than a stall.
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; False if not sent (logged, never raised:
        a notification that fails must not take the control of the site down with it)."""
        if self._sock is None or self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def reloading(self, status: str | None = None) -> bool:
        """Call before a reload, then ``ready()`` once done. MONOTONIC_USEC lets systemd 253+
        (Type=notify-reload) tell this reload from an earlier one; older systemd ignores it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        extra = [f"STATUS={_one_line(status)}"] if status else []
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *extra)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment inside the datagram.
    return " ".join(text.split())


def watchdog_seconds(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """WatchdogSec as systemd passes it ($WATCHDOG_USEC), or None if no watchdog is asked of
    this process ($WATCHDOG_PID names another one, e.g. a wrapper that exec'd us)."""
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        raise ValueError(f"WATCHDOG_USEC={raw!r}: not a whole number of microseconds") from None
    if usec <= 0:
        raise ValueError(f"WATCHDOG_USEC={raw!r}: must be positive")
    return usec / 1e6


class Reporting(Protocol):
    """What the watchdog reads from the controller: the report of the last finished tick."""

    @property
    def last_report(self) -> object | None: ...


@dataclass
class LoopHealth:
    """Healthy while a tick finished within ``stall_after_s``.

    The controller replaces ``last_report`` at the end of every tick; watching that object
    change (on the monotonic clock, so wall-clock steps cannot fake a stall) tells when a tick
    last finished without a hook in the loop. Until the first tick, the start counts as one."""

    stall_after_s: float
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        self._seen: object | None = None
        self.finished_at = self.clock()
        self.ticks = 0

    def see(self, report: object | None) -> bool:
        """Note the controller's current report; True if it is a new one."""
        if report is None or report is self._seen:
            return False
        self._seen = report
        self.finished_at = self.clock()
        self.ticks += 1
        return True

    def healthy(self) -> bool:
        return self.clock() - self.finished_at <= self.stall_after_s


def stall_after(tick_seconds: float, call_timeout_s: float, confirm_timeout_s: float) -> float:
    """How long after the last finished tick the loop counts as stalled: two tick intervals,
    plus the longest a healthy tick may legitimately take beyond its interval (it reads the
    fleet twice, waits for sheds to be confirmed, and sends twice, each bounded by a timeout)."""
    return 2 * tick_seconds + confirm_timeout_s + 4 * call_timeout_s


async def run_watchdog(
    notifier: Notifier,
    controller: Reporting,
    health: LoopHealth,
    interval_s: float,
    *,
    describe: Callable[[object], str] | None = None,
    check_every_s: float = 0.5,
) -> None:
    """Ping every ``interval_s`` while ``health`` says the loop is fine; until cancelled.

    The controller is looked at every ``check_every_s`` so the time a tick finished is known
    to that precision, independent of the (much longer) ping interval."""
    last_ping = float("-inf")
    was_healthy = True
    while True:
        if health.see(controller.last_report) and describe is not None:
            notifier.status(describe(controller.last_report))
        now = health.clock()
        if health.healthy():
            if not was_healthy:
                log.warning("control loop healthy again: watchdog pings resume")
            was_healthy = True
            if now - last_ping >= interval_s:
                notifier.watchdog()
                last_ping = now
        elif was_healthy:
            was_healthy = False
            log.error("control loop stalled: no tick finished in %.0f s; watchdog pings stop",
                      now - health.finished_at)
            notifier.status(f"stalled: no tick finished for {now - health.finished_at:.0f} s")
        await asyncio.sleep(min(check_every_s, interval_s))


@contextlib.asynccontextmanager
async def supervised(
    controller: Reporting,
    *,
    stall_after_s: float,
    status: str,
    env: Mapping[str, str] | None = None,
    describe: Callable[[object], str] | None = None,
    clock: Clock = time.monotonic,
) -> AsyncIterator[Notifier]:
    """Tell systemd the daemon is up (READY=1), keep the watchdog fed while the loop is healthy,
    and say STOPPING=1 on the way out. Use around the control loop, after the fleet is open."""
    notifier = Notifier.from_env(env)
    interval = watchdog_seconds(env)
    task: asyncio.Task[None] | None = None
    if interval is not None:
        # A stall is noticed after stall_after_s, and systemd acts WatchdogSec after the last
        # ping: the restart comes at most stall_after_s + WatchdogSec after the last good tick.
        health = LoopHealth(stall_after_s, clock)
        task = asyncio.create_task(
            run_watchdog(notifier, controller, health, interval / 2, describe=describe), name="sd-watchdog"
        )
    notifier.ready(status)
    try:
        yield notifier
    finally:
        notifier.stopping("stopping")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        notifier.close()


def describe_report(report: Any) -> str:
    """The STATUS line ``systemctl status`` shows: what the last tick did."""
    failed = len(report.failures)
    return (f"tick {report.seconds:.1f} s, {len(report.results)} commands"
            + (f", {failed} failed" if failed else "")
            + (f"; {report.allocation.summary}" if report.allocation.summary else ""))


def supervised_site(controller: Reporting, site: SiteConfig, *, env: Mapping[str, str] | None = None
                    ) -> contextlib.AbstractAsyncContextManager[Notifier]:
    """``supervised`` with the stall threshold and status taken from the site file."""
    d = site.drivers
    return supervised(
        controller,
        stall_after_s=stall_after(site.tick_seconds, d.call_timeout_seconds, d.confirm_timeout_seconds),
        status=f"controlling site {site.name}",
        describe=describe_report,
        env=env,
    )
