"""The broker link to every GPU host's ``wattshift agent``: one MQTT connection for the site.

:class:`AgentLink` subscribes to each host's readings, replies and availability
(:mod:`.agent_wire`), keeps the latest good reading per host (:class:`AgentHost`), and sends
commands; the drivers that use it (:mod:`.agent_gpu`: a host's cards, the hosts' jobs) judge
freshness and confirmation from what it keeps. What it believes, and what it refuses:

- **Hostile messages.** Each message is bounded and parsed strictly. One on host A's topic
  that names another host, or a card another host reports, or a card the site file did not
  list for A, is refused; so is a retained reply, and one whose id was not sent. Each refusal
  has a reason (``REFUSALS``, a bounded set: a Prometheus label).
- **Clock skew.** A reading whose ``at`` is more than ``max_skew_seconds`` from the
  controller's clock is refused (reason ``clock``): its offset is kept for the metrics
  (``wattshift_agent_clock_offset_seconds``), and the host goes stale, so it counts at its
  maximum until its clock is fixed. A retained reading left by an agent long dead looks the
  same and is refused the same way; a retained one within the skew counts as old as its ``at``
  says, so it goes stale on time.
- **An open broker.** Where the controller logs in, the link checks at each connect whether a
  client with no login gets in too (``anonymity_check``). If one does, anyone on the site
  network could publish readings that under-report a node's draw: ``untrusted`` says so, and
  every agent node then reads as ``Failure.NO_ANSWER`` (counted at its maximum) until the
  broker is closed, unless the site file accepts it (``mqtt.agents.allow_anonymous_broker``).

The link publishes a heartbeat to a host each time its node is read (at most one per
``heartbeat_seconds``): the agent moves to its safe cap when the controller's loop, not just
its connection, goes silent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from wattshift.model.miner import Failure

from .agent_wire import (
    DEFAULT_PREFIX,
    OFFLINE,
    ONLINE,
    PROTOCOL,
    AgentTopics,
    CapCommand,
    Heartbeat,
    JobCommand,
    Readings,
    Reply,
    WireError,
    encode,
    parse_readings,
    parse_reply,
    split_topic,
)
from .base import DeviceError

log = logging.getLogger(__name__)

ANONYMOUS_BROKER = (
    "the broker accepts anonymous clients, so anyone on the site network could publish agent "
    "readings; turn anonymous access off (Mosquitto: allow_anonymous false, docs/mqtt.md) or set "
    "mqtt.agents.allow_anonymous_broker: true"
)

# Why a message was refused: a bounded set, a Prometheus label.
REFUSALS = ("malformed", "host", "uuid", "clock", "unknown_host", "retained", "unexpected")
RETAINED_GRACE_SECONDS = 1.0  # after subscribing, for the broker to deliver the retained readings


@dataclass
class AgentHost:
    """What the controller knows about one agent host between messages."""

    host: str
    device_id: str
    allowed: frozenset[str] | None  # the cards the site file lists for it (None: any it reports)
    online: bool | None = None  # its availability topic; None: not heard
    readings: Readings | None = None
    received_at: float | None = None  # controller clock (monotonic) when ``readings`` arrived
    clock_offset_seconds: float | None = None  # agent clock minus ours, at the last reading
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: int = 0
    heartbeat_at: float = -math.inf
    replies: dict[str, asyncio.Future[Reply]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def fresh(self, now: float, stale_after: float) -> bool:
        return (self.online is not False and self.readings is not None and self.received_at is not None
                and now - self.received_at <= stale_after)

    def age_seconds(self, now: float) -> float | None:
        return None if self.received_at is None else max(0.0, now - self.received_at)


class AgentLink:
    """One connection to the broker for every agent host; see the module docstring."""

    def __init__(
        self,
        client_factory: Callable[[], aiomqtt.Client],
        *,
        prefix: str = DEFAULT_PREFIX,
        stale_after_seconds: float = 15.0,
        max_skew_seconds: float = 30.0,
        heartbeat_seconds: float = 10.0,
        reconnect_min_seconds: float = 1.0,
        reconnect_max_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        anonymity_check: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._factory = client_factory
        self._anonymity_check = anonymity_check
        # Why no agent's reading is believed now (an open broker), or None.
        self.untrusted: str | None = None
        self.prefix = prefix
        self.stale_after = stale_after_seconds
        self.max_skew = max_skew_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._reconnect = (reconnect_min_seconds, reconnect_max_seconds)
        self.clock = clock  # ours, monotonic: ages and staleness
        self.wall = wall  # ours, Unix: only to compare with the agents' timestamps (skew)
        self.hosts: dict[str, AgentHost] = {}
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self.connected = asyncio.Event()
        # Set a moment after the first connect: the broker has handed over the retained readings.
        self.settled = asyncio.Event()
        self.connections = 0
        self.unknown_refused = 0  # messages on the topics of hosts the site file does not name
        self._beats: set[asyncio.Task[None]] = set()  # heartbeats in flight (a task needs a reference)

    # -- the hosts -------------------------------------------------------------------------------

    def register(self, host: str, device_id: str, allowed: Sequence[str] | None = None) -> AgentHost:
        if host in self.hosts:
            raise ValueError(f"host: {host!r} is already driven by node {self.hosts[host].device_id!r}")
        state = AgentHost(host, device_id, frozenset(allowed) if allowed is not None else None)
        self.hosts[host] = state
        return state

    def fresh(self, host: str) -> bool:
        state = self.hosts.get(host)
        return state is not None and state.fresh(self.clock(), self.stale_after)

    def age_seconds(self, host: str) -> float | None:
        state = self.hosts.get(host)
        return None if state is None else state.age_seconds(self.clock())

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (in the background, reconnecting for ever); one call per node that uses it."""
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="agent-link")

    async def release(self) -> None:
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        delay, most = self._reconnect
        while True:
            try:
                async with self._factory() as client:
                    await self._check_broker()  # before any reading is taken in
                    for kind in ("readings", "reply", "availability"):
                        await client.subscribe(f"{self.prefix}/+/{kind}", qos=1)
                    self._client = client
                    self.connections += 1
                    self.connected.set()
                    if not self.settled.is_set():
                        asyncio.get_running_loop().call_later(RETAINED_GRACE_SECONDS, self.settled.set)
                    delay = self._reconnect[0]
                    log.info("agents: connected to the broker; %d host(s)", len(self.hosts))
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.deliver(str(message.topic), payload, retained=bool(message.retain))
            except aiomqtt.MqttError as err:
                log.warning("agents: %s; reconnecting in %.1f s", err, delay)
            except Exception:  # a bug here must not end the link for the life of the daemon
                log.exception("agents: unexpected error; reconnecting in %.1f s", delay)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, most)

    async def _check_broker(self) -> None:
        if self._anonymity_check is None:
            return
        was = self.untrusted
        self.untrusted = ANONYMOUS_BROKER if await self._anonymity_check() else None
        if self.untrusted is not None and was is None:
            log.error("agents: %s: every agent node counts at its maximum", self.untrusted)
        elif was is not None and self.untrusted is None:
            log.warning("agents: the broker no longer lets anonymous clients in; agent readings believed again")

    async def publish(self, host: str, message: CapCommand | JobCommand | Heartbeat) -> None:
        """Send a command; ``Failure.NO_ANSWER`` if the broker is not reachable now."""
        client = self._client
        state = self.hosts[host]
        if client is None:
            raise DeviceError(state.device_id, Failure.NO_ANSWER, "not connected to the MQTT broker")
        try:
            await client.publish(AgentTopics(self.prefix, host).command, encode(message), qos=1, retain=False)
        except aiomqtt.MqttError as err:
            raise DeviceError(state.device_id, Failure.NO_ANSWER, f"MQTT publish failed: {err}") from None

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def heartbeat(self, host: str) -> None:
        """A heartbeat to ``host`` unless one went out within ``heartbeat_seconds``; never waits."""
        state = self.hosts[host]
        now = self.clock()
        if self._client is None or now - state.heartbeat_at < self.heartbeat_seconds:
            return
        state.heartbeat_at = now
        beat = Heartbeat(v=PROTOCOL, command="heartbeat", id=self.new_id(), host=host, sent_at=self.wall())
        task = asyncio.get_running_loop().create_task(self.publish(host, beat))
        self._beats.add(task)
        task.add_done_callback(self._beat_done)

    def _beat_done(self, task: asyncio.Task[None]) -> None:
        self._beats.discard(task)
        _retrieve(task)

    # -- messages in -----------------------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes, *, retained: bool = False) -> str | None:
        """Take one message; the reason it was refused (one of ``REFUSALS``), or None."""
        where = split_topic(self.prefix, topic)
        if where is None or where[1] == "cmd":
            return None  # not ours to read (the commands are what we send)
        host, kind = where
        state = self.hosts.get(host)
        if state is None:
            self.unknown_refused += 1
            return "unknown_host"
        if kind == "availability":
            state.online = {ONLINE: True, OFFLINE: False}.get(payload)
            if state.online is False:
                log.warning("agents: %s (node %s) is offline", host, state.device_id)
            state.changed.set()
            return None
        reason = (self._readings(state, payload, retained) if kind == "readings"
                  else self._reply(state, payload, retained))
        if reason is not None:
            state.refused[reason] += 1
            if state.refused[reason] == 1 or reason in ("host", "uuid"):
                log.warning("agents: refused a %s message on %s: %s", kind, topic, reason)
        return reason

    def _readings(self, state: AgentHost, payload: bytes, retained: bool = False) -> str | None:
        try:
            readings = parse_readings(payload)
        except WireError as err:
            log.debug("agents: %s: readings refused: %s", state.host, err)
            return "malformed"
        if readings.host != state.host:
            return "host"  # a message on A's topic that says it is B's
        uuids = {card.uuid for card in readings.gpus}
        if len(uuids) != len(readings.gpus):
            return "malformed"
        if state.allowed is not None and not uuids <= state.allowed:
            return "uuid"
        for other in self.hosts.values():
            if other is not state and other.readings is not None and uuids & {c.uuid for c in other.readings.gpus}:
                return "uuid"  # a card another host reports: one of the two is lying
        offset = readings.at - self.wall()
        state.clock_offset_seconds = offset
        if abs(offset) > self.max_skew:
            return "clock"
        if state.readings is not None and readings.at < state.readings.at and state.fresh(self.clock(),
                                                                                          self.stale_after):
            return "unexpected"  # older than what we hold: a replay
        state.readings = readings
        # A retained reading was stored by the broker, maybe long ago (an agent that died before
        # its will fired): it is as old as its own timestamp says, not as old as its delivery.
        state.received_at = self.clock() - (max(0.0, -offset) if retained else 0.0)
        state.online = True if state.online is None else state.online
        state.accepted += 1
        state.changed.set()
        return None

    def _reply(self, state: AgentHost, payload: bytes, retained: bool) -> str | None:
        if retained:
            return "retained"
        try:
            reply = parse_reply(payload)
        except WireError:
            return "malformed"
        if reply.host != state.host:
            return "host"
        waiting = state.replies.get(reply.id or "")
        if waiting is None or waiting.done():
            return "unexpected"
        waiting.set_result(reply)
        return None

    async def ask(self, host: str, command: CapCommand | JobCommand, timeout: float) -> Reply:
        """Send ``command`` and wait for its reply (``Failure.TIMEOUT`` if none in time)."""
        state = self.hosts[host]
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        state.replies[command.id] = future
        try:
            await self.publish(host, command)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise DeviceError(state.device_id, Failure.TIMEOUT,
                              f"agent {host}: no reply to {command.command} {command.id} in {timeout:g} s") from None
        finally:
            state.replies.pop(command.id, None)

    async def reading_after(self, host: str, agent_time: float, received_after: float, timeout: float) -> Readings:
        """The first reading taken (agent clock) after ``agent_time`` and received after
        ``received_after`` (our clock); ``Failure.TIMEOUT`` if none arrives in time."""
        state = self.hosts[host]

        def good() -> Readings | None:
            r = state.readings
            ok = r is not None and r.at > agent_time and state.received_at is not None
            return r if ok and state.received_at is not None and state.received_at >= received_after else None

        try:
            async with asyncio.timeout(timeout):
                while (found := good()) is None:
                    state.changed.clear()
                    await state.changed.wait()
                return found
        except TimeoutError:
            raise DeviceError(state.device_id, Failure.TIMEOUT,
                              f"agent {host}: no reading newer than the cap within {timeout:g} s") from None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("agents: heartbeat not sent: %s", task.exception())
