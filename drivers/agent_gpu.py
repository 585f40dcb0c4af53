"""GPUs on other hosts, through the ``wattshift agent`` on each, over the site's MQTT broker.

:class:`AgentLink` is one MQTT connection for every agent host of the site: it subscribes to
each host's readings, replies and availability (:mod:`.agent_wire`), keeps the latest good
reading per host, and sends commands. :class:`AgentGpus` is one host's cards seen through the
link; it implements :class:`~wattshift.drivers.gpu.GpuDriver`, so the loop drives a remote node
exactly as a local one, with the same guarantees:

- **Unknown means worst case.** A host whose agent said ``offline`` (its last will), or whose
  last good reading is older than ``stale_after_seconds`` (on the controller's clock, from when
  it arrived), reads as every card ``Failure.NO_ANSWER``: the node counts at its maximum.
- **Confirmed by a fresh reading.** ``set_power_limit`` sends a cap with a fresh id, waits for
  the agent's reply (the agent's own read-back), then for a reading the agent took after that
  reply and that arrived after it: only that reading's limit confirms the cap. An agent that
  says OK and keeps its old cap is ``Failure.IGNORED``; no fresh reading in time is
  ``Failure.TIMEOUT``. Either way the loop distrusts the node and counts it at its maximum.
- **Hostile messages.** Each message is bounded and parsed strictly. One on host A's topic
  that names another host, or a card another host reports, or a card the site file did not
  list for A, is refused; so is a retained reply, and one whose id was not sent.
- **Clock skew.** A reading whose ``at`` is more than ``max_skew_seconds`` from the
  controller's clock is refused (reason ``clock``): its offset is kept for the metrics
  (``wattshift_agent_clock_offset_seconds``), and the host goes stale, so it counts at its
  maximum until its clock is fixed. A retained reading left by an agent long dead looks the
  same and is refused the same way; a retained one within the skew counts as old as its ``at``
  says, so it goes stale on time.

- **An open broker.** Where the controller logs in, the link checks at each connect whether a
  client with no login gets in too (``anonymity_check``). If one does, anyone on the site
  network could publish readings that under-report a node's draw: every agent node then reads
  as ``Failure.NO_ANSWER`` (counted at its maximum) until the broker is closed, unless the site
  file accepts it (``mqtt.agents.allow_anonymous_broker``).

The link publishes a heartbeat to a host each time its node is read (at most one per
``heartbeat_seconds``): the agent moves to its safe cap when the controller's loop, not just
its connection, goes silent.

:class:`AgentJobs` is the site's job runner when the hosts run their own jobs (the agent's
``jobs:``): it reads the jobs from each host's fresh readings and moves them through that host's
agent. A host whose runner could not be asked reads as unknown, so its node counts at its maximum.
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from wattshift.model.gpu import GpuReading
from wattshift.model.miner import Failure

from .agent_wire import (
    DEFAULT_PREFIX,
    OFFLINE,
    ONLINE,
    PROTOCOL,
    AgentTopics,
    CapCommand,
    Heartbeat,
    JobAction,
    JobCommand,
    Readings,
    Reply,
    WireError,
    card_in,
    encode,
    parse_readings,
    parse_reply,
    split_topic,
)
from .base import DeviceError
from .jobs import DEFAULT_ACTION_TIMES, ActionTimes, JobError, JobSpec, JobStatus

log = logging.getLogger(__name__)

ANONYMOUS_BROKER = (
    "the broker accepts anonymous clients, so anyone on the site network could publish agent "
    "readings; turn anonymous access off (Mosquitto: allow_anonymous false, docs/mqtt.md) or set "
    "mqtt.agents.allow_anonymous_broker: true"
)

# Why a message was refused: a bounded set, a Prometheus label.
REFUSALS = ("malformed", "host", "uuid", "clock", "unknown_host", "retained", "unexpected")
RETAINED_GRACE_SECONDS = 1.0  # after subscribing, for the broker to deliver the retained readings
CAP_SLACK_WATTS = 1.0  # as the NVML driver: a card keeps its limit at its own granularity


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


class AgentGpus:
    """One GPU host's cards through its agent (implements ``GpuDriver``)."""

    def __init__(
        self,
        gpus: Any = "all",
        *,
        call_timeout_seconds: float = 5.0,
        name: str = "agent",
        host: str | None = None,
        link: AgentLink,
    ) -> None:
        self.name = name
        self.host = host or name
        self._link = link
        self._timeout = call_timeout_seconds
        # Only UUIDs can name a card across hosts: indices are the agent's business.
        listed = [g for g in gpus if isinstance(g, str)] if isinstance(gpus, list | tuple) else []
        self._state = link.register(self.host, name, listed or None)
        self._started = False

    async def start(self) -> list[str]:
        """Connect, and wait (once per link, at most the call timeout) for the broker to hand
        over the agents' retained readings; this host's cards' UUIDs (an agent not heard yet
        gives none now, and its cards as soon as it is read: a site of many dead agents must
        not take a timeout per node to start)."""
        if not self._started:
            self._started = True
            await self._link.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._link.settled.wait()
        return self._uuids()

    def _uuids(self) -> list[str]:
        if self._state.readings is not None:
            return [c.uuid for c in self._state.readings.gpus]
        return sorted(self._state.allowed or ())

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._link.release()

    async def read_all(self) -> Mapping[str, GpuReading | DeviceError]:
        self._link.heartbeat(self.host)
        state = self._state
        if self._link.untrusted is not None:
            why = f"agent {self.host}: {self._link.untrusted}"
            return {u: DeviceError(u, Failure.NO_ANSWER, why) for u in self._uuids() or [self.name]}
        if not self._link.fresh(self.host):
            why = self._why_not_fresh()
            uuids = self._uuids() or [self.name]
            return {u: DeviceError(u, Failure.NO_ANSWER, why) for u in uuids}
        assert state.readings is not None
        if state.readings.jobs_error is not None:  # what runs there is unknown: so is its draw
            why = f"agent {self.host}: its job runner failed: {state.readings.jobs_error}"
            return {c.uuid: DeviceError(c.uuid, Failure.NO_ANSWER, why) for c in state.readings.gpus}
        return {c.uuid: card_in(c, self.name) for c in state.readings.gpus}

    def _why_not_fresh(self) -> str:
        state = self._state
        if state.online is False:
            return f"agent {self.host} is offline (its last will)"
        age = state.age_seconds(self._link.clock())
        if age is None:
            offset = state.clock_offset_seconds
            if offset is not None and abs(offset) > self._link.max_skew:
                return f"agent {self.host}: readings refused, its clock is {offset:+.0f} s from ours"
            return f"agent {self.host}: no reading yet"
        return f"agent {self.host}: last reading {age:.0f} s old (stale after {self._link.stale_after:g} s)"

    async def set_power_limit(self, uuid: str, watts: float) -> float:
        if not isinstance(watts, int | float) or not math.isfinite(watts) or watts <= 0:
            raise DeviceError(uuid, Failure.REFUSED, f"watts: {watts!r} is not a positive finite number")
        link, host = self._link, self.host
        command = CapCommand(v=PROTOCOL, command="cap", id=link.new_id(), host=host, sent_at=link.wall(),
                             uuid=uuid, watts=float(watts))
        sent = link.clock()
        reply = await link.ask(host, command, self._timeout)
        if reply.status != "ok":
            failure = Failure(reply.failure) if reply.failure in set(Failure) else Failure.REFUSED
            raise DeviceError(uuid, failure, f"agent {host}: {reply.detail or reply.status}")
        readings = await link.reading_after(host, reply.at, sent, self._timeout)
        card = next((c for c in readings.gpus if c.uuid == uuid), None)
        if card is None or card.error is not None or card.limit_watts is None:
            raise DeviceError(uuid, Failure.NO_ANSWER, f"agent {host}: card not in the reading after the cap")
        if abs(card.limit_watts - watts) > CAP_SLACK_WATTS:
            raise DeviceError(uuid, Failure.IGNORED, f"agent {host} said OK to {watts:g} W, but its next reading "
                                                     f"shows {card.limit_watts:g} W")
        return card.enforced_limit_watts if card.enforced_limit_watts is not None else card.limit_watts


class AgentJobs:
    """The jobs of every agent host that runs its own (implements ``JobRunner``). A job's id is
    ``<host>/<its id on the host>``; its node is the host's node."""

    name = "agents"

    def __init__(self, link: AgentLink, *, timeout_seconds: float = 10.0,
                 times: ActionTimes = DEFAULT_ACTION_TIMES) -> None:
        self._link = link
        self.timeout_seconds = timeout_seconds
        self.times = times

    async def status(self, job_ids: Sequence[str] | None = None) -> Mapping[str, JobStatus]:
        found: dict[str, JobStatus] = {}
        for host, state in self._link.hosts.items():
            readings = state.readings
            if readings is None or readings.jobs is None or not self._link.fresh(host):
                continue  # a stale host's node already counts at its maximum
            for job in readings.jobs:
                job_id = f"{host}/{job.job_id}"
                found[job_id] = JobStatus(job_id, job.name, job.state, node=state.device_id, gpus=job.gpus)
        return found if job_ids is None else {j: found[j] for j in job_ids if j in found}

    async def submit(self, spec: JobSpec) -> str:
        raise JobError(None, "submit", "jobs are submitted on the GPU host; its agent reports and moves them")

    async def start(self, job_id: str) -> None:
        await self._move(job_id, "start")

    async def suspend(self, job_id: str) -> None:
        await self._move(job_id, "suspend")

    async def resume(self, job_id: str) -> None:
        await self._move(job_id, "resume")

    async def requeue(self, job_id: str) -> None:
        await self._move(job_id, "requeue")

    async def stop(self, job_id: str) -> None:
        await self._move(job_id, "stop")

    async def _move(self, job_id: str, action: JobAction) -> None:
        host, _, local = job_id.partition("/")
        if host not in self._link.hosts or not local:
            raise JobError(job_id, action, "not a job of an agent host (<host>/<job id>)")
        link = self._link
        try:
            command = JobCommand(v=PROTOCOL, command="job", id=link.new_id(), host=host, sent_at=link.wall(),
                                 action=action, job_id=local)
            sent = link.clock()
            reply = await link.ask(host, command, self.timeout_seconds)
            if reply.status != "ok":
                raise JobError(job_id, action, f"agent {host}: {reply.detail or reply.status}")
            # Done once the agent's next reading shows the job where it is now: till then the
            # controller's view has it where it was, and would send the same move again (which
            # the host's runner refuses: "is suspended, not running").
            await link.reading_after(host, reply.at, sent, self.timeout_seconds)
        except DeviceError as err:
            raise JobError(job_id, action, err.detail) from None
        except ValueError as err:  # an id the wire refuses
            raise JobError(job_id, action, str(err)) from None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("agents: heartbeat not sent: %s", task.exception())
