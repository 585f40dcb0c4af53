"""Apply a validated command to the running daemon, or refuse it with a reason.

Each command is checked against the live site (is the device there, is the limit below the
contract, is the window still ahead) before anything changes; a refusal changes nothing. The
caller (:class:`wattshift.daemon.mqtt.bridge.MqttBridge`) replies and journals the outcome.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattshift.model.budget import BudgetEvent
from wattshift.model.snapshot import DeviceClass
from wattshift.policies.overrides import Forced, Override, Overrides

from .commands import (
    BudgetCommand,
    ForceCommand,
    PauseCommand,
    PolicyCommand,
    Rejection,
    RestoreCommand,
    ResumeCommand,
)
from .state import event_json

if TYPE_CHECKING:
    from wattshift.daemon.control.controller import Controller

log = logging.getLogger(__name__)

# Load, check and install the policy file at ``path`` (keeping any override wrapper). It returns
# a description, or a result with ``accepted``/``message``/``problems`` (PolicyReloader's), or
# raises: a raise or ``accepted=False`` is a refusal, and the reason goes back to the sender.
PolicySwitcher = Callable[[Path], Any]


@dataclass(frozen=True)
class BudgetWatch:
    """A budget command waiting for the site's worst case to come under its limit."""

    event_name: str
    limit_watts: float
    since: float  # loop clock when the command was accepted


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    rejection: Rejection | None = None
    watch: BudgetWatch | None = None

    @classmethod
    def refuse(cls, reason: str, field: str | None, value: Any) -> Outcome:
        rejection = Rejection(reason, field, value)
        return cls(False, rejection.message(), rejection=rejection)


class CommandHandler:
    def __init__(
        self,
        controller: Controller,
        *,
        overrides: Overrides | None = None,
        policy_switcher: PolicySwitcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.controller = controller
        self.overrides = overrides
        self.policy_switcher = policy_switcher
        self._clock = clock
        self._wall = wall

    async def handle(self, command: Any, request_id: str | None) -> Outcome:
        if isinstance(command, BudgetCommand):
            return await self._budget(command, request_id)
        if isinstance(command, RestoreCommand):
            return self._restore(command)
        if isinstance(command, ForceCommand):
            return self._force(command)
        if isinstance(command, PolicyCommand):
            return await self._policy(command)
        if isinstance(command, PauseCommand | ResumeCommand):
            return self._pause(paused=isinstance(command, PauseCommand))
        return Outcome.refuse("unknown command", "command", getattr(command, "command", None))

    # -- budget ----------------------------------------------------------------------------------

    async def _budget(self, command: BudgetCommand, request_id: str | None) -> Outcome:
        now = self._wall()
        start, end = command.window(now)
        contract = self.controller.budget.contract_watts
        limit = command.limit_kw * 1000.0
        if limit > contract:
            return Outcome.refuse(f"above the contract budget ({contract / 1000:g} kW): an event can only lower it",
                                  "limit_kw", command.limit_kw)
        if end is not None and end <= now:
            which = "duration_seconds" if command.duration_seconds is not None else "end"
            value = command.duration_seconds if which == "duration_seconds" else _iso(end)
            return Outcome.refuse("the event would already be over", which, value)
        name = command.name or f"mqtt-{request_id or int(now.timestamp())}"
        event = BudgetEvent(name, limit, start, end, command.priority)
        try:
            await self.controller.add_budget_event(event)
        except ValueError as err:
            return Outcome.refuse(str(err), "name", name)
        watch = BudgetWatch(name, limit, self._clock())
        return Outcome(True, f"budget event {name}: {limit / 1000:g} kW", {"event": event_json(event)}, watch=watch)

    def _restore(self, command: RestoreCommand) -> Outcome:
        if not self.controller.budget.cancel(command.name):
            known = [e.name for e in self.controller.budget.events()]
            return Outcome.refuse(f"no such budget event (known: {known})", "name", command.name)
        self.controller.request_replan(f"budget event {command.name} ended by command")
        return Outcome(True, f"budget event {command.name} ended", {"name": command.name})

    # -- force -----------------------------------------------------------------------------------

    def _force(self, command: ForceCommand) -> Outcome:
        overrides = self.overrides
        if getattr(self.controller.policy, "overrides", None) is not overrides or overrides is None:
            return Outcome.refuse("forcing devices is not available (no override policy installed)",
                                  "state", command.state)
        now = self._wall()
        if command.until is not None and command.until <= now:
            return Outcome.refuse("is in the past", "until", _iso(command.until))
        override = None if command.state == "auto" else Override(Forced(command.state), command.until)
        known = self._device_classes()
        if command.device is not None:
            if command.device not in known:
                return Outcome.refuse("no such device on this site", "device", command.device)
            overrides.set_device(command.device, override)
            target = f"device {command.device}"
        else:
            assert command.device_class is not None  # the parser let through exactly one of the two
            device_class = DeviceClass(command.device_class)
            if device_class not in known.values():
                return Outcome.refuse("no device of this class on this site", "class", command.device_class)
            overrides.set_class(device_class, override)
            target = f"class {device_class.value}"
        until = f" until {command.until.isoformat()}" if command.until else ""
        self.controller.request_replan(f"{target} forced {command.state}")
        return Outcome(True, f"{target} forced {command.state}{until}",
                       {"target": target, "state": command.state,
                        "until": command.until.isoformat() if command.until else None})

    def _device_classes(self) -> dict[str, DeviceClass]:
        report = self.controller.last_report
        if report is not None:
            return {d.device_id: d.kind for d in report.snapshot.loads}
        return dict.fromkeys(self.controller.miner_ids, DeviceClass.MINER)

    # -- policy, manual mode ---------------------------------------------------------------------

    async def _policy(self, command: PolicyCommand) -> Outcome:
        if self.policy_switcher is None:
            return Outcome.refuse("policy switching not available", "path", command.path)
        # The reply carries the loader's problems (key, line, reason) but nothing of the file: the
        # sender picks the file, and it may hold anything. The loader leaves values out; a quoted
        # string in a reason (a validator naming what it refused) is cut here as well. An
        # exception is not the loader's worded refusal: only its kind goes back.
        try:
            result = self.policy_switcher(Path(command.path))
            described = await result if inspect.isawaitable(result) else result
        except Exception as err:
            log.warning("mqtt: policy %s refused: %s", command.path, err)
            return Outcome.refuse(f"refused ({type(err).__name__}); the daemon's log says why", "path", command.path)
        # PolicyReloader.switch_policy answers with a result rather than raising.
        if getattr(described, "accepted", True) is False:
            problems = "; ".join(getattr(described, "problems", ())) or getattr(described, "message", "refused")
            return Outcome.refuse(_QUOTED.sub("(not shown)", problems), "path", command.path)
        described = getattr(described, "message", described)
        self.controller.request_replan("policy switched")
        return Outcome(True, f"policy switched: {described}", {"path": command.path})

    def _pause(self, *, paused: bool) -> Outcome:
        # Manual mode only: --dry-run belongs to the process and no command ends it.
        controller = self.controller
        was = controller.paused
        controller.paused = paused
        controller.request_replan("actuation paused" if paused else "actuation resumed")
        mode = "manual (actuation paused)" if paused else "auto (actuation resumed)"
        if not paused and controller.dry_run:
            mode = "auto, but the daemon runs with --dry-run: nothing is sent until it is restarted without it"
        return Outcome(True, f"mode {mode}" + ("" if was != paused else ", no change"),
                       {"paused": paused, "dry_run": controller.dry_run})


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _iso(at: datetime) -> str:
    """A time as a sender most likely wrote it: UTC as ``Z``."""
    return at.isoformat().replace("+00:00", "Z")
