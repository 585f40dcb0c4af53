"""A simulated site with the MQTT bridge on a real Mosquitto, and an operator's MQTT client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from mosquitto import Broker
from simsite import running_site

from wattshift.daemon.config.mqtt import Login, MqttConfig
from wattshift.daemon.control.recorder import FanOut
from wattshift.daemon.mqtt.bridge import MqttBridge
from wattshift.daemon.mqtt.handler import PolicySwitcher
from wattshift.drivers.mqtt_meter import SiteMeter
from wattshift.model.budget import BudgetSchedule
from wattshift.policies.overrides import OverridePolicy, Overrides
from wattshift.simulators.site import MinerBatch, SimulatedSite, TruthMonitor

PREFIX = "wattshift/test"  # running_site names the site "test"


@dataclass
class Setup:
    sim: SimulatedSite
    daemon: Any
    budget: BudgetSchedule
    truth: TruthMonitor
    bridge: MqttBridge
    overrides: Overrides

    @property
    def controller(self) -> Any:
        return self.daemon.controller


def tls_params(broker: Broker) -> aiomqtt.TLSParameters | None:
    if broker.tls_files is None:
        return None
    return aiomqtt.TLSParameters(ca_certs=str(broker.tls_files.ca_file))


def bridge_config(broker: Broker, **overrides: Any) -> MqttConfig:
    fields: dict[str, Any] = {
        "host": broker.host, "port": broker.port, "publish_min_interval_seconds": 0.1,
        "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.5, "keepalive": 5,
    }
    if broker.tls_files is not None:
        fields["tls"] = {"ca_file": broker.tls_files.ca_file}
    return MqttConfig.model_validate({**fields, **overrides})


@contextlib.asynccontextmanager
async def site_with_bridge(
    tmp_path: Path,
    broker: Broker,
    first_address: str,
    *,
    batches: list[MinerBatch] | None = None,
    budget_kw: float = 10,
    login: Login | None = None,
    policy_switcher: PolicySwitcher | None = None,
    tick_seconds: float | None = None,
    with_meter: bool = False,
    clock: Any = None,
    dry_run: bool = False,
    **config: Any,
) -> AsyncIterator[Setup]:
    batches = batches or [MinerBatch("luxos", 2, "site", "Antminer S21")]
    async with running_site(batches, tmp_path / "site", first_address=first_address,
                            budget_kw=budget_kw, dry_run=dry_run) as (sim, daemon, budget, truth):
        controller = daemon.controller
        if tick_seconds is not None:
            # The site file's floor is 1 s; tests step faster than a site would.
            controller.site = controller.site.model_copy(update={"tick_seconds": tick_seconds})
        overrides = Overrides()
        controller.policy = OverridePolicy(controller.policy, overrides)
        if with_meter:
            config["meter"] = {"topic": "site/meter", "field": "power.total", "units": "kW", "stale_after_seconds": 5}
        mqtt = bridge_config(broker, **config)
        meter = SiteMeter.from_config(mqtt.meter) if mqtt.meter is not None else None
        bridge = MqttBridge(mqtt, controller, login=login, overrides=overrides, policy_switcher=policy_switcher,
                            meter=meter, **({"clock": clock} if clock is not None else {}))
        controller.recorder = FanOut(controller.recorder, bridge)
        async with bridge:
            async with asyncio.timeout(10):
                await bridge.connected.wait()
            yield Setup(sim, daemon, budget, truth, bridge, overrides)


async def settled(bridge: MqttBridge, watcher: Operator) -> None:
    """Return once everything the bridge had to publish is out. The publisher sends its queue,
    then the state, in one pass: a marker seen, then a second marker seen, means the pass that
    sent the first one (and any state it had) is complete. ``watcher`` must watch the events."""
    for n in range(2):
        marker = f"settled {id(watcher)} {n}"
        await bridge.event(marker, {})
        await watcher.wait_for(f"{PREFIX}/events", lambda body, m=marker: body["summary"] == m)


@dataclass
class Operator:
    """Someone at the console: sends commands, collects every message on the topics it watches."""

    client: aiomqtt.Client
    messages: list[aiomqtt.Message] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, command: dict[str, Any] | bytes, topic: str = f"{PREFIX}/cmd", **kwargs: Any) -> None:
        payload = command if isinstance(command, bytes) else json.dumps(command).encode()
        await self.client.publish(topic, payload, qos=1, **kwargs)

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.matches(topic)]

    def replies(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(topic)]

    async def wait_for(self, topic: str, predicate: Any = lambda body: True, timeout: float = 10.0) -> dict[str, Any]:
        """The first JSON message on ``topic`` for which ``predicate`` holds (already here or to come)."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.on(topic):
                    body = json.loads(message.payload)
                    if predicate(body):
                        return body
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_raw(self, topic: str, payload: bytes, timeout: float = 10.0) -> aiomqtt.Message:
        async with asyncio.timeout(timeout):
            while True:
                found = [m for m in self.on(topic) if m.payload == payload]
                if found:
                    return found[-1]
                self._arrived.clear()
                await self._arrived.wait()

    async def _collect(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)
            self._arrived.set()


@contextlib.asynccontextmanager
async def operator(
    broker: Broker, *topics: str, username: str | None = None, password: str | None = None,
    identifier: str | None = None,
) -> AsyncIterator[Operator]:
    async with aiomqtt.Client(broker.host, broker.port, username=username, password=password,
                              identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
                              tls_params=tls_params(broker)) as client:
        for topic in topics or (f"{PREFIX}/reply/#", f"{PREFIX}/reply"):
            await client.subscribe(topic, qos=1)
        op = Operator(client)
        task = asyncio.create_task(op._collect())
        try:
            yield op
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
