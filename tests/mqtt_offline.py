"""The MQTT bridge without a broker: a real Controller (two miners, never read), real
overrides, and a recorder that checks every journal row exactly as the journal would.

``on_command`` is called directly; what the bridge would publish is read back through the
outbox's own ``send`` into :class:`Sent`. The broker-level behaviour (retained flags, the MQTT 5
properties on the wire, anonymous clients) is tested against Mosquitto in tests/integration.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wattshift.daemon.config.mqtt import MqttConfig
from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.control.controller import Controller
from wattshift.daemon.journal.entries import EntryKind, NewEntry, to_row
from wattshift.daemon.mqtt.bridge import MqttBridge
from wattshift.policies.base import Allocation
from wattshift.policies.overrides import OverridePolicy, Overrides

PREFIX = "wattshift/test"
MINERS = ("10.0.0.1", "10.0.0.2")


class Hold:
    """A policy that is never asked: these tests do not tick."""

    name = "hold"

    def decide(self, snapshot: Any) -> Allocation:
        raise AssertionError("no tick in an offline test")


class NoFleet:
    """A fleet that is never read (no tick), only wired."""

    def on_capability_lost(self, callback: Any) -> None:
        pass


@dataclass
class CheckedJournal:
    """A Recorder whose events go through the journal's own checks (``to_row``): a row the real
    journal would refuse fails here too, and is counted as lost."""

    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def event(self, summary: str, data: dict[str, object]) -> None:
        try:
            row = to_row(NewEntry(EntryKind.EVENT, summary, data=data), datetime.now(UTC), "event")
        except ValueError as err:
            self.refused.append(str(err))
            raise
        self.rows.append((row[3], json.loads(row[4])))

    async def decision(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def commands(self, steps: Any) -> None:
        pass

    async def results(self, results: Any) -> None:
        pass

    async def tick(self, report: Any) -> None:
        pass


@dataclass
class Sent:
    """A Publisher that keeps what the outbox sends."""

    messages: list[tuple[str, dict[str, Any], Any]] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool, properties: Any = None) -> None:
        if "+" in topic or "#" in topic:
            raise ValueError("Publish topic cannot contain wildcards.")  # as paho does
        self.messages.append((topic, json.loads(payload), properties))


@dataclass
class Offline:
    bridge: MqttBridge
    controller: Controller
    overrides: Overrides
    journal: CheckedJournal

    async def command(self, payload: bytes | dict[str, Any], properties: Any = None, *,
                      retained: bool = False) -> tuple[Any, list[tuple[str, dict[str, Any], Any]]]:
        """The outcome and the messages published for one command."""
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        outcome = await self.bridge.on_command(raw, properties, **({"retained": True} if retained else {}))
        sent = Sent()
        await self.bridge.outbox.send(sent, qos=1, retain=False)
        return outcome, sent.messages

    def state(self) -> tuple[Any, ...]:
        """Everything a command may change."""
        c = self.controller
        return (tuple(c.budget.events()), dict(self.overrides.devices), dict(self.overrides.classes),
                getattr(c, "paused", None), c.dry_run, c.policy, getattr(c.policy, "inner", None),
                len(self.bridge._watches))


@functools.cache
def _site() -> SiteConfig:
    return SiteConfig.model_validate({"name": "test", "budget_kw": 10, "miners": [{"addresses": list(MINERS)}]})


def offline(*, dry_run: bool = False, policy_switcher: Any = None, **mqtt: Any) -> Offline:
    site = _site()  # frozen: one for every test
    overrides = Overrides()
    journal = CheckedJournal()
    controller = Controller(site, NoFleet(), OverridePolicy(Hold(), overrides),  # type: ignore[arg-type]
                            hashprice=None, power_price=None, recorder=journal, dry_run=dry_run)  # type: ignore[arg-type]
    config = MqttConfig.model_validate({"host": "127.0.0.1", **mqtt})
    bridge = MqttBridge(config, controller, overrides=overrides, policy_switcher=policy_switcher)
    return Offline(bridge, controller, overrides, journal)
