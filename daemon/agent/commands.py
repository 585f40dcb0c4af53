"""What the agent makes of one message on its command topic (pure): a command to obey, or why not.

Every message is hostile until shown otherwise: bounded and strictly parsed
(:func:`~wattshift.drivers.agent_wire.parse_command`), for this host, not retained (a retained
command would act again at every reconnect), sent within ``max_age_seconds`` of our clock (an
old one is a replay, one from the future a skewed clock), and not an id seen already.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from wattshift.drivers.agent_wire import CapCommand, Heartbeat, JobCommand, WireError, parse_command

SEEN_IDS = 1024  # ids remembered against replays (a command is refused past max age anyway)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    request_id: str | None = None


class CommandGate:
    def __init__(self, host: str, *, max_age_seconds: float) -> None:
        self.host = host
        self.max_age = max_age_seconds
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def admit(self, payload: bytes, *, retained: bool, now: float) -> CapCommand | JobCommand | Heartbeat | Refusal:
        if retained:
            return Refusal("a retained command: commands act once, when sent; clear it with an empty "
                           "retained message")
        try:
            command = parse_command(payload)
        except WireError as err:
            return Refusal(f"not a command: {err}")
        if command.host != self.host:
            return Refusal(f"host: {command.host!r} is not this agent ({self.host!r})", command.id)
        skew = now - command.sent_at
        if abs(skew) > self.max_age:
            what = "old" if skew > 0 else "ahead of this host's clock"
            return Refusal(f"sent_at: {abs(skew):.0f} s {what} (max {self.max_age:g} s; check NTP on both hosts)",
                           command.id)
        if command.id in self._seen:
            return Refusal(f"id: {command.id!r} was already obeyed (a replay)", command.id)
        self._seen[command.id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return command
