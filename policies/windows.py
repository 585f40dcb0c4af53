"""Schedule windows: 4CP-style peaks and time-of-use periods, from cron expressions.

A :class:`Window` opens at each start its cron expression gives (APScheduler's ``CronTrigger``,
in the window's own time zone, daylight saving included) and stays open ``duration_minutes``.
While open it may lower the budget (to ``budget_kw``, or to ``budget_factor`` of the budget in
force) and change the policy's options. A window belongs to the day it starts, so one that
starts Friday 22:00 for 8 hours is open Saturday 02:00 whatever its day-of-week field says.

Evaluation is pure: :func:`active_windows` asks the trigger for the first start after
``at - duration``; the window is open iff that start is at or before ``at``. No scheduler runs,
no clock is read, so :class:`WindowedPolicy` can wrap any policy and stay a pure function.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, PrivateAttr, field_validator, model_validator

from wattshift.model.fields import Name, Strict
from wattshift.model.snapshot import SiteSnapshot

from .base import Allocation, Policy, forecast_seconds, is_stateful


class Window(Strict):
    name: Name
    cron: str
    duration_minutes: float = Field(gt=0, le=31 * 24 * 60)
    timezone: str = "UTC"
    budget_kw: float | None = Field(default=None, gt=0)
    budget_factor: float | None = Field(default=None, ge=0, le=1)
    options: dict[str, Any] = Field(default_factory=dict)
    _trigger: CronTrigger = PrivateAttr()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as America/Chicago)") from None
        return value

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields (minute hour day month day-of-week), got {len(fields)}")
        if any(ch.isdigit() for ch in fields[4]):
            # cron counts Sunday as 0, APScheduler counts Monday as 0: a number here would be read
            # one day off by one of them. Names mean the same to everyone.
            raise ValueError(f"day-of-week {fields[4]!r}: write days as names (mon-fri, sat,sun), not numbers")
        try:
            CronTrigger.from_crontab(value)
        except ValueError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _does_something(self) -> Window:
        if self.budget_kw is None and self.budget_factor is None and not self.options:
            raise ValueError("a window must set budget_kw, budget_factor or options")
        return self

    def model_post_init(self, context: Any) -> None:
        self._trigger = CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)

    def opened_at(self, at: datetime) -> datetime | None:
        """The start of the opening that covers ``at``, or None when the window is shut."""
        if at.utcoffset() is None:
            raise ValueError(f"window {self.name}: {at!r} has no time zone")
        # Starts are whole seconds: ask from just after ``at - duration`` so a window that
        # opened exactly ``duration`` ago counts as shut.
        # In UTC: arithmetic on a zoned datetime is wall-clock arithmetic, wrong across DST.
        at = at.astimezone(UTC)
        start = self._trigger.get_next_fire_time(None, at - self.duration + timedelta(microseconds=1))
        return start if start is not None and start <= at else None

    def budget_watts(self, budget_watts: float) -> float:
        lowered = budget_watts
        if self.budget_kw is not None:
            lowered = min(lowered, self.budget_kw * 1000.0)
        if self.budget_factor is not None:
            lowered = min(lowered, budget_watts * self.budget_factor)
        return lowered


def active_windows(windows: Sequence[Window], at: datetime) -> list[Window]:
    """The windows open at ``at`` (timezone-aware), in their given order."""
    return [w for w in windows if w.opened_at(at) is not None]


class WindowedPolicy:
    """Any policy, with its budget lowered and its options changed while windows are open.

    ``factory`` builds the bare policy from options (``wattshift.policies.catalog.build_policy``
    bound to a name): one instance per set of options, built once and reused, so a window's
    options are checked when the file is loaded, not when the window first opens.
    """

    def __init__(
        self,
        factory: Callable[[Mapping[str, Any]], Policy],
        options: Mapping[str, Any],
        windows: Sequence[Window],
    ) -> None:
        self.windows = tuple(windows)
        self.options = dict(options)
        self._factory = factory
        self._built: dict[str, Policy] = {}
        self.base = self._policy(self.options)
        for w in self.windows:  # a bad option in any window fails here, at load time
            self._policy({**self.options, **w.options})
        self.name = self.base.name
        self.stateful = is_stateful(self.base)
        # The longest look-ahead of the policies a window may switch to.
        self.forecast_seconds = max(forecast_seconds(p) for p in self._built.values())

    def _policy(self, options: Mapping[str, Any]) -> Policy:
        key = json.dumps(options, sort_keys=True, default=str)
        if key not in self._built:
            self._built[key] = self._factory(options)
        return self._built[key]

    def decide(self, snapshot: SiteSnapshot, state: Mapping[str, Any] | None = None) -> Allocation:
        open_now = active_windows(self.windows, snapshot.at)
        if not open_now:
            return self._inner_decide(self.base, snapshot, state)
        options = dict(self.options)
        budget = snapshot.budget_watts
        for w in open_now:
            options.update(w.options)
            budget = min(budget, w.budget_watts(snapshot.budget_watts))
        policy = self._policy(options)
        narrowed = snapshot if budget == snapshot.budget_watts else dataclasses.replace(snapshot, budget_watts=budget)
        allocation = self._inner_decide(policy, narrowed, state)
        names = ", ".join(w.name for w in open_now)
        note = f"windows open: {names}" + (
            f" (budget {budget / 1000:.1f} kW)" if budget < snapshot.budget_watts else ""
        )
        return Allocation(allocation.targets, f"{allocation.summary}; {note}", allocation.state)

    def _inner_decide(self, policy: Policy, snapshot: SiteSnapshot, state: Mapping[str, Any] | None) -> Allocation:
        if self.stateful:
            return policy.decide(snapshot, state)  # type: ignore[call-arg]
        return policy.decide(snapshot)
