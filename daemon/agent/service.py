"""The agent: this host's cards through the NVML driver, spoken for over MQTT.

Three tasks share one :class:`GpuAgent`:

- the **reader** reads every card every ``read_interval_seconds`` (and at once after a cap) and
  publishes the reading, retained, at most once per ``publish_min_interval_seconds``;
- the **link** connects with a last will (``offline``, retained), says ``online``, subscribes to
  this host's command topic only, and obeys what :class:`~.commands.CommandGate` admits: a cap
  is set through the driver, read back, and answered on the reply topic with the value held;
- with a job runner (``jobs:``, the command runner), the reader also asks it for this host's jobs
  and the link moves them (start, suspend, resume, requeue, stop) when the controller says;
- the **watchdog** moves the cards to the safe cap once the controller has said nothing valid
  (no cap, no heartbeat) for ``controller_silence_seconds``. Until then every card keeps its
  last cap, and the safe cap is only ever a cut: a card already lower stays where it is. The
  agent never raises a cap on its own, not at start, not on shutdown (a stopped agent leaves
  its cards as they are: the controller counts the node at its maximum meanwhile).

Where the agent logs in, the link checks at each connect whether a client with no login gets in
too; if one does, anyone on the site network could command the cards, so every command is
refused (answered, with the reason) until the broker is closed, unless the agent's file says
``mqtt.allow_anonymous_broker: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

import aiomqtt

from wattshift.daemon.config.agent import AgentConfig
from wattshift.daemon.mqtt.client import admits_anonymous, make_client, proves_identity
from wattshift.drivers.agent_wire import (
    MAX_DETAIL,
    OFFLINE,
    ONLINE,
    PROTOCOL,
    AgentTopics,
    CapCommand,
    Job,
    JobCommand,
    Readings,
    Reply,
    card_out,
    encode,
)
from wattshift.drivers.base import DeviceError
from wattshift.drivers.command_runner import CommandRunner
from wattshift.drivers.jobs import JobError, JobRunner
from wattshift.drivers.nvml_gpu import NvmlGpus
from wattshift.model.gpu import GpuLimits, GpuReading

from .commands import CommandGate, Refusal

log = logging.getLogger(__name__)

ClientFactory = Callable[[aiomqtt.Will], aiomqtt.Client]

ANONYMOUS_BROKER = (
    "the broker accepts anonymous clients, so anyone on the site network could send this; turn "
    "anonymous access off (Mosquitto: allow_anonymous false, docs/mqtt.md) or set "
    "mqtt.allow_anonymous_broker: true in the agent's file"
)


class Cards(Protocol):
    """What the agent needs of the NVML driver (:class:`~wattshift.drivers.nvml_gpu.NvmlGpus`)."""

    async def start(self) -> list[str]: ...

    async def read_all(self) -> Mapping[str, GpuReading | DeviceError]: ...

    async def set_power_limit(self, uuid: str, watts: float) -> float: ...

    async def close(self) -> None: ...


class GpuAgent:
    def __init__(
        self,
        config: AgentConfig,
        cards: Cards,
        client_factory: ClientFactory,
        *,
        runner: JobRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        anonymity_check: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.config = config
        self.cards = cards
        self._anonymity_check = anonymity_check
        self.broker_open = False  # the last connect found that anyone gets in: commands refused
        self.runner = runner
        self._factory = client_factory
        self._clock = clock
        self._wall = wall
        self.topics = AgentTopics(config.mqtt.prefix, config.host)
        self.gate = CommandGate(config.host, max_age_seconds=config.max_command_age_seconds)
        self._client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()
        self._seq = 0
        self._latest: Readings | None = None
        self._cards: dict[str, GpuReading | DeviceError] = {}
        self._index: dict[str, int] = {}
        self._limits: dict[str, GpuLimits] = {}
        self._last_limit: dict[str, float] = {}  # last limit each card reported (a failed read keeps it)
        self._published_at = -float("inf")
        self.last_read_at: float | None = None  # our clock, at the last read of the cards
        self.controller_heard_at = clock()
        self.safe_cap_applied = False
        self.connected = asyncio.Event()
        self.connections = 0
        self.refused = 0
        self.obeyed = 0

    @classmethod
    def from_config(cls, config: AgentConfig, **options: Any) -> GpuAgent:
        """The agent of ``config``: its cards through NVML, its broker as the file says."""
        mqtt, login = config.mqtt, config.login()

        def client(will: aiomqtt.Will) -> aiomqtt.Client:
            return make_client(mqtt.host, mqtt.broker_port(), identifier=config.client_id, tls=mqtt.tls,
                               login=login, will=will, keepalive=mqtt.keepalive, logger=log)

        async def broker_open() -> bool:
            return await admits_anonymous(mqtt.host, mqtt.broker_port(), identifier=config.client_id, tls=mqtt.tls)

        if proves_identity(login, mqtt.tls) and not mqtt.allow_anonymous_broker:
            options.setdefault("anonymity_check", broker_open)
        cards = NvmlGpus(config.selection(), call_timeout_seconds=config.call_timeout_seconds, name=config.host)
        jobs = config.jobs
        runner = CommandRunner(jobs.commands, timeout_seconds=jobs.timeout_seconds) if jobs is not None else None
        return cls(config, cards, client, runner=runner, **options)

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then say ``offline`` and let go of NVML (caps stay)."""
        uuids = await self.cards.start()
        log.info("agent %s: managing %d GPU(s): %s", self.config.host, len(uuids), ", ".join(uuids))
        self.controller_heard_at = self._clock()
        tasks = [asyncio.create_task(t, name=n) for n, t in
                 (("agent-reader", self._reader()), ("agent-link", self._link()), ("agent-watchdog", self._watchdog()))]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.cards.close()

    # -- readings --------------------------------------------------------------------------------

    async def read_now(self) -> Readings:
        at = self._wall()  # before the read: a reading is never newer than what it saw
        read = await self.cards.read_all()
        self._cards = dict(read)
        for uuid, r in read.items():
            if isinstance(r, GpuReading):
                self._index[uuid] = r.index
                if r.limits is not None:
                    self._limits[uuid] = r.limits
                if r.limit_watts is not None:
                    self._last_limit[uuid] = r.limit_watts
        jobs, jobs_error = await self._jobs()
        self._seq += 1
        self.last_read_at = self._clock()
        self._latest = Readings(v=PROTOCOL, host=self.config.host, at=at, seq=self._seq,
                                safe_cap=self.safe_cap_applied,
                                gpus=[card_out(r, uuid, self._index.get(uuid, 0)) for uuid, r in read.items()],
                                jobs=jobs, jobs_error=jobs_error)
        return self._latest

    async def _jobs(self) -> tuple[list[Job] | None, str | None]:
        """This host's unfinished jobs, or why the runner could not say (None, None: no runner)."""
        if self.runner is None:
            return None, None
        try:
            async with asyncio.timeout(self.config.call_timeout_seconds * 2):
                statuses = await self.runner.status()
        except (JobError, TimeoutError) as err:
            return None, (str(err) or "the job runner did not answer in time")[:MAX_DETAIL]
        try:
            jobs = [Job(job_id=s.job_id, name=s.name[:200], state=s.state, gpus=min(s.gpus, 64))
                    for s in statuses.values() if not s.state.finished]
        except ValueError as err:  # an id or name the wire refuses: say so rather than send it
            return None, f"the job runner reported a job the agent cannot pass on: {err}"[:MAX_DETAIL]
        return jobs[:64], None

    @property
    def latest_cards(self) -> dict[str, GpuReading | DeviceError]:
        return dict(self._cards)

    def reading_healthy(self, within_seconds: float) -> bool:
        """The cards were read within ``within_seconds`` (for systemd's watchdog)."""
        return self.last_read_at is not None and self._clock() - self.last_read_at <= within_seconds

    async def _reader(self) -> None:
        config = self.config
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.read_interval_seconds):
                    await self._wake.wait()
            wait = self._published_at + config.publish_min_interval_seconds - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake.clear()
            try:
                readings = await self.read_now()
            except Exception:  # one bad read must not stop the readings for the life of the agent
                log.exception("agent: reading the cards failed")
                continue
            await self._publish(self.topics.readings, encode(readings), retain=True)
            self._published_at = self._clock()

    async def _publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        client = self._client
        if client is None:
            return False  # the latest reading goes out on the next connect
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as err:
            log.debug("agent: publish to %s failed: %s", topic, err)
            return False
        return True

    # -- the link --------------------------------------------------------------------------------

    async def _link(self) -> None:
        mqtt = self.config.mqtt
        delay = mqtt.reconnect_min_seconds
        will = aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True)
        while True:
            try:
                async with self._factory(will) as client:
                    await self._check_broker()  # before any command can arrive
                    await client.subscribe(self.topics.command, qos=1)
                    await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
                    self._client = client
                    self.connections += 1
                    self.connected.set()
                    delay = mqtt.reconnect_min_seconds
                    log.info("agent %s: connected to %s:%d", self.config.host, mqtt.host, mqtt.broker_port())
                    self._wake.set()  # the broker may have lost the retained reading: say it again
                    try:
                        async for message in client.messages:
                            if str(message.topic) != self.topics.command:
                                continue  # subscribed to nothing else; a broker bug must not steer us
                            payload = message.payload if isinstance(message.payload, bytes) else b""
                            await self.on_command(payload, retained=bool(message.retain))
                    finally:
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            async with asyncio.timeout(2):
                                await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            except aiomqtt.MqttError as err:
                log.warning("agent: %s; reconnecting in %.1f s", err, delay)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, mqtt.reconnect_max_seconds)

    async def _check_broker(self) -> None:
        if self._anonymity_check is None:
            return
        was, self.broker_open = self.broker_open, await self._anonymity_check()
        if self.broker_open and not was:
            log.error("agent %s: %s: every command is refused", self.config.host, ANONYMOUS_BROKER)
        elif was and not self.broker_open:
            log.warning("agent %s: the broker no longer lets anonymous clients in; commands obeyed", self.config.host)

    async def on_command(self, payload: bytes, *, retained: bool = False) -> Reply | None:
        """Admit, obey and answer one message on the command topic (a heartbeat gets no answer)."""
        admitted = self.gate.admit(payload, retained=retained, now=self._wall())
        if self.broker_open and not isinstance(admitted, Refusal):  # a heartbeat included: no one vouches for it
            admitted = Refusal(ANONYMOUS_BROKER, admitted.id)
        if isinstance(admitted, Refusal):
            self.refused += 1
            log.warning("agent: command refused: %s", admitted.reason)
            return await self._reply(Reply(v=PROTOCOL, host=self.config.host, id=admitted.request_id,
                                           status="refused", at=self._wall(), detail=admitted.reason[:MAX_DETAIL]))
        self.controller_heard_at = self._clock()
        self.safe_cap_applied = False
        if isinstance(admitted, JobCommand):
            self.obeyed += 1
            reply = await self._job(admitted)
        elif isinstance(admitted, CapCommand):
            self.obeyed += 1
            reply = await self._cap(admitted)
        else:
            return None
        self._wake.set()  # the reading that confirms it
        return await self._reply(reply)

    async def _cap(self, command: CapCommand) -> Reply:
        def reply(status: Literal["ok", "failed", "refused"], **fields: Any) -> Reply:
            return Reply(v=PROTOCOL, host=self.config.host, id=command.id, uuid=command.uuid, status=status,
                         at=self._wall(), **fields)

        if command.uuid not in self._cards:
            return reply("refused", detail=f"uuid: {command.uuid!r} is not a GPU this agent manages")
        try:
            enforced = await self.cards.set_power_limit(command.uuid, command.watts)
        except DeviceError as err:
            log.warning("agent: cap %s W on %s failed: %s", command.watts, command.uuid, err.detail)
            return reply("failed", failure=err.failure.value, detail=err.detail[:MAX_DETAIL])
        except ValueError as err:
            return reply("refused", detail=str(err)[:MAX_DETAIL])
        log.info("agent: cap %s W on %s, enforced %s W", command.watts, command.uuid, enforced)
        return reply("ok", held_watts=command.watts, enforced_watts=enforced)

    async def _job(self, command: JobCommand) -> Reply:
        def reply(status: Literal["ok", "failed", "refused"], detail: str | None = None) -> Reply:
            return Reply(v=PROTOCOL, host=self.config.host, id=command.id, job_id=command.job_id, status=status,
                         at=self._wall(), detail=detail)

        if self.runner is None:
            return reply("refused", "this agent runs no jobs (no jobs: in its file)")
        try:
            async with asyncio.timeout(self.config.call_timeout_seconds * 2):
                await getattr(self.runner, command.action)(command.job_id)
        except (JobError, TimeoutError) as err:
            log.warning("agent: %s of job %s failed: %s", command.action, command.job_id, err)
            return reply("failed", (str(err) or "the job runner did not answer in time")[:MAX_DETAIL])
        log.info("agent: job %s: %s", command.job_id, command.action)
        return reply("ok")

    async def _reply(self, reply: Reply) -> Reply:
        await self._publish(self.topics.reply, encode(reply), retain=False)
        return reply

    # -- the controller's silence ----------------------------------------------------------------

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.controller_silence_seconds / 4))
            silent = self._clock() - self.controller_heard_at
            if silent >= self.config.controller_silence_seconds and not self.safe_cap_applied:
                await self.apply_safe_cap(silent)

    async def apply_safe_cap(self, silent_seconds: float) -> dict[str, float]:
        """Every card whose limit is above its safe cap moves down to it; none moves up."""
        self.safe_cap_applied = True
        moved: dict[str, float] = {}
        for uuid in self._cards:
            limits, current = self._limits.get(uuid), self._last_limit.get(uuid)
            if limits is None or current is None:
                continue  # never read: its limit could be below the safe cap, and we never raise one
            target = self.config.safe_cap_watts if self.config.safe_cap_watts is not None else limits.min_watts
            target = min(max(target, limits.min_watts), limits.max_watts)
            if current <= target:
                continue  # already at or below it: the safe cap never raises a card
            try:
                moved[uuid] = await self.cards.set_power_limit(uuid, target)
            except DeviceError as err:
                log.error("agent: could not move %s to its safe cap %g W: %s", uuid, target, err.detail)
        log.warning("agent %s: no word from the controller for %.0f s: %d card(s) moved to the safe cap",
                    self.config.host, silent_seconds, len(moved))
        self._wake.set()
        return moved
