"""The daemon on MQTT: state out, commands in, one connection, never in the loop's way.

:class:`MqttBridge` is a :class:`~wattshift.daemon.control.recorder.Recorder`. Its recorder methods only
store the latest report or append to a bounded queue and return: the control loop never waits
for the broker. A background task owns the connection (aiomqtt): it connects with a last will
(``<prefix>/availability`` = ``offline``, retained), says ``online``, subscribes to the command
topic (and the site meter's), and publishes:

- state (site, circuits, classes, devices) as retained JSON, each topic at most once per
  ``publish_min_interval_seconds`` and only when it changed; the latest value always goes out;
- decisions and events, not retained, in order, from a queue that drops the oldest when full
  (what goes out when is :class:`~wattshift.daemon.mqtt.outbox.Outbox`'s job).

When the broker goes away the task reconnects with exponential backoff (with jitter); after a
reconnect every state topic is published again. Commands are validated
(:mod:`wattshift.daemon.mqtt.commands`), applied (:mod:`wattshift.daemon.mqtt.handler`),
journaled through the controller's recorder, and answered on the reply topic.

What guards the command topic: a retained command is refused (it would act again at every
restart), so is one older than ``mqtt.commands.max_age_seconds`` by its ``sent_at``, and one
whose reply would land outside the reply prefix. With credentials, each connect also tries an
anonymous client: if the broker lets it in, anyone on the network could send commands, and
every command is refused unless the site file says ``allow_anonymous_broker: true``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wattshift.daemon.config.mqtt import Login, MqttConfig
from wattshift.daemon.control.sequencer import Plan, Step
from wattshift.drivers.mqtt_meter import SiteMeter
from wattshift.model.snapshot import SiteSnapshot
from wattshift.policies.base import Allocation
from wattshift.policies.overrides import Overrides, forced_devices

from .client import CALL_TIMEOUT_SECONDS, admits_anonymous, make_client, proves_identity
from .commands import Rejection, parse_command, show
from .delivery import ReplyTo, delivery_refusal, reply_target
from .handler import BudgetWatch, CommandHandler, Outcome, PolicySwitcher
from .outbox import Outbox
from .state import (
    SiteContext,
    all_state,
    decision_json,
    discovery_configs,
    event_message,
)
from .topics import Topics

if TYPE_CHECKING:
    from wattshift.daemon.control.actuator import StepResult
    from wattshift.daemon.control.controller import Controller, TickReport

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"


@dataclass(frozen=True)
class _Pending:
    watch: BudgetWatch
    reply: ReplyTo
    request_id: str | None


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str, allow_nan=False).encode()


class MqttBridge:
    def __init__(
        self,
        config: MqttConfig,
        controller: Controller,
        *,
        login: Login | None = None,
        overrides: Overrides | None = None,
        policy_switcher: PolicySwitcher | None = None,
        meter: SiteMeter | None = None,
        overhead: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.controller = controller
        self.site_name = controller.site.name
        reserved = [config.homeassistant.prefix] if config.homeassistant.enabled else []
        if config.meter is not None:
            reserved.append(config.meter.topic)
        self.topics = Topics(config.topic_prefix(self.site_name), config.commands.reply_prefix, tuple(reserved))
        self.login = login
        self.overrides = overrides
        self.meter = meter
        self.overhead = overhead
        self.handler = CommandHandler(controller, overrides=overrides, policy_switcher=policy_switcher,
                                      clock=clock, wall=wall)
        self._clock = clock
        self._wall = wall
        self._report: TickReport | None = None
        self._state_dirty = False
        self.outbox = Outbox(queue_limit=config.queue_limit,
                             min_interval_seconds=config.publish_min_interval_seconds, clock=clock)
        self._watches: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._serving = False
        self.connected = asyncio.Event()
        self.connections = 0  # successful connects, for operators and tests
        # Whether the broker let an anonymous client in at the last connect (None: not checked,
        # the daemon has no credentials of its own to compare with).
        self.anonymous_broker: bool | None = None
        self.verdicts: collections.Counter[str] = collections.Counter()  # "accepted"/"rejected" -> commands

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> MqttBridge:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mqtt-bridge")

    async def aclose(self) -> None:
        """Say ``offline`` (a clean disconnect does not fire the will) and disconnect."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                    await self._task
            except TimeoutError:
                log.warning("mqtt: did not close in time; dropping the connection")
            self._task = None

    # -- Recorder: never blocks, never raises for the broker's sake ------------------------------

    async def decision(self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> None:
        self._enqueue(self.topics.decisions, _json(decision_json(snapshot, allocation, plan, dry_run=dry_run)))

    async def commands(self, steps: Sequence[Step]) -> None:
        pass  # the decision message already lists every step

    async def results(self, results: Sequence[StepResult]) -> None:
        failed = [r for r in results if not r.ok]
        if failed:
            self._enqueue(self.topics.events, _json(event_message(
                f"{len(failed)} command(s) failed",
                {"failures": [{"device": r.step.device_id, "failure": str(r.failure), "detail": r.detail}
                              for r in failed]}, self._wall())))

    async def tick(self, report: TickReport) -> None:
        self._report = report
        self._state_dirty = True
        self._check_watches(report)
        self._wake.set()

    async def event(self, summary: str, data: dict[str, object]) -> None:
        self._enqueue(self.topics.events, _json(event_message(summary, data, self._wall())))

    @property
    def dropped(self) -> int:
        """Queued messages lost to a full queue while the broker was away."""
        return self.outbox.dropped

    def _enqueue(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        self.outbox.enqueue(topic, payload, properties)
        self._wake.set()

    # -- state -----------------------------------------------------------------------------------

    def context(self) -> SiteContext:
        now = self._wall()
        controller = self.controller
        forced: dict[str, str] = {}
        if self.overrides and self._report is not None:
            classes = {d.device_id: d.kind for d in self._report.snapshot.loads}
            forced = forced_devices(self.overrides, classes, now)
        return SiteContext(
            site_name=self.site_name,
            mode="dry-run" if controller.dry_run else "manual" if controller.paused else "auto",
            policy=getattr(controller.policy, "name", "?"),
            events=tuple(controller.budget.events()),
            budget_now_watts=controller.budget.at(now),
            forced=forced,
            meter=self.meter.latest() if self.meter is not None else None,
            overhead_watts=self.overhead() if self.overhead is not None else None,
        )

    def _render_state(self) -> None:
        if not self._state_dirty or self._report is None:
            return
        self._state_dirty = False
        state = all_state(self._report, self.context(), self.topics)
        self.outbox.offer_state({topic: _json(payload) for topic, payload in state.items()})

    # -- budget follow-ups -----------------------------------------------------------------------

    def _check_watches(self, report: TickReport) -> None:
        if not self._watches:
            return
        events = {e.name: e for e in self.controller.budget.events()}
        worst = sum(d.worst_case_watts for d in report.snapshot.loads)
        worst += (self.overhead() or 0.0) if self.overhead is not None else 0.0
        keep = []
        for pending in self._watches:
            watch = pending.watch
            event = events.get(watch.event_name)
            if event is None or event.limit_watts != watch.limit_watts:
                self._reply(pending.reply, pending.request_id, "budget", "ended",
                            reason="the event ended or was replaced before the site got under it")
            elif worst <= watch.limit_watts:
                seconds = round(self._clock() - watch.since, 3)
                self._reply(pending.reply, pending.request_id, "budget", "reached",
                            data={"event": watch.event_name, "limit_watts": watch.limit_watts,
                                  "worst_case_watts": round(worst, 1), "seconds": seconds,
                                  "reached_at": report.snapshot.at.isoformat()})
            else:
                keep.append(pending)
        self._watches = keep

    # -- commands --------------------------------------------------------------------------------

    async def on_command(self, payload: bytes, properties: Properties | None = None, *,
                         retained: bool = False) -> Outcome:
        """Validate, apply, journal and answer one command message. Every message, whatever its
        bytes, gets a journal row and a reply (on its own reply topic when that is allowed, else
        on the default one); a refused one changes nothing."""
        parsed = parse_command(payload)
        if isinstance(parsed, Rejection):
            request_id, name, reply_to = parsed.request_id, parsed.command, parsed.reply_to
        else:
            request_id, name, reply_to = parsed.id, parsed.command, parsed.reply_to
        reply, misdirected = reply_target(self.topics, request_id, reply_to, properties)
        commands = self.config.commands
        refusal = delivery_refusal(
            parsed, retained=retained, misdirected=misdirected, now=self._wall(),
            anonymous_broker=bool(self.anonymous_broker) and not commands.allow_anonymous_broker,
            max_age_seconds=commands.max_age_seconds, require_sent_at=commands.require_sent_at,
        )
        if refusal is not None:
            refusal = refusal.redacted()
            outcome = Outcome(False, refusal.message(), rejection=refusal)
        else:
            try:
                outcome = await self.handler.handle(parsed, request_id)
            except Exception as err:  # a bug in one command must not take the bridge down
                log.exception("mqtt: command %s failed", name)
                outcome = Outcome.refuse(f"internal error: {type(err).__name__}", None, None)
        await self._journal(outcome, name, request_id, retained)
        status = "accepted" if outcome.accepted else "rejected"
        self.verdicts[status] += 1
        rejection = outcome.rejection
        self._reply(reply, request_id, name, status,
                    reason=None if outcome.accepted else (rejection.reason if rejection else outcome.summary),
                    field=rejection.field if rejection else None,
                    value=rejection.value if rejection else None,
                    data={"summary": outcome.summary, **outcome.data})
        if outcome.watch is not None:
            self._watches.append(_Pending(outcome.watch, reply, request_id))
            if self._report is not None:
                self._check_watches(self._report)
        return outcome

    async def _journal(self, outcome: Outcome, name: str | None, request_id: str | None, retained: bool) -> None:
        verdict = "accepted" if outcome.accepted else "rejected"
        summary = f"mqtt command {name or '?'} {verdict}: {outcome.summary}"
        data: dict[str, object] = {"source": "mqtt", "command": name, "request": request_id,
                                   "accepted": outcome.accepted, "retained": retained}
        if outcome.rejection is not None:
            # The value as short text: bounded, and a key inside it cannot trip the journal's
            # refusal of credential-like keys (its secrets are already hidden).
            data.update(field=outcome.rejection.field, value=show(outcome.rejection.value))
        try:
            await self.controller.recorder.event(summary, data)
        except Exception:  # the journal's own failure is logged there; the reply still goes out
            log.exception("mqtt: could not journal command %s", name)

    def _reply(self, reply: ReplyTo, request_id: str | None, command: str | None, status: str, *,
               reason: str | None = None, field: str | None = None, value: Any = None,
               data: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"id": request_id, "command": command, "status": status, "at": self._wall().isoformat()}
        if reason is not None:
            body.update(reason=reason, field=field, value=_echo(value))
        if data:
            body["data"] = data
        properties = None
        if reply.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = reply.correlation
        self._enqueue(reply.topic, _json(body), properties)

    # -- the connection --------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        config = self.config
        return make_client(config.host, config.broker_port(), identifier=config.identifier(self.site_name),
                           tls=config.tls, login=self.login, keepalive=config.keepalive, logger=log,
                           will=aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True))

    async def _check_anonymous(self) -> None:
        """Whether a client without credentials gets in where the daemon needs them. Checked
        before the command topic is subscribed, so no command arrives before the verdict."""
        config = self.config
        if not proves_identity(self.login, config.tls):
            return  # the daemon itself is anonymous: nothing to compare (docs/mqtt.md says so)
        accepted = await admits_anonymous(config.host, config.broker_port(),
                                          identifier=config.identifier(self.site_name), tls=config.tls)
        if accepted and self.anonymous_broker is not True:
            refused = not self.config.commands.allow_anonymous_broker
            message = ("mqtt: the broker accepts anonymous clients: anyone on the network can publish to "
                       f"{self.topics.command}" + ("; every command is refused" if refused else
                                                   "; commands obeyed (mqtt.commands.allow_anonymous_broker)"))
            log.log(logging.ERROR if refused else logging.WARNING, "%s", message)
            try:
                await self.controller.recorder.event(message, {"source": "mqtt", "anonymous_broker": True,
                                                               "commands_refused": refused})
            except Exception:  # the journal's failure is logged there; the verdict stands
                log.exception("mqtt: could not journal the anonymous-broker check")
        self.anonymous_broker = accepted

    async def _run(self) -> None:
        delay = self.config.reconnect_min_seconds
        while not self._closing.is_set():
            try:
                async with self._client() as client:
                    delay = self.config.reconnect_min_seconds
                    await self._on_connect(client)
                    await self._serve(client)
                    if self._closing.is_set():
                        await self._flush(client)
                        await client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            except aiomqtt.MqttError as err:
                if not self._closing.is_set():
                    log.warning("mqtt: %s; reconnecting in %.1f s", err, delay)
            except Exception:  # a bug here must not end MQTT for the life of the daemon
                log.exception("mqtt: unexpected error; reconnecting in %.1f s", delay)
            finally:
                self.connected.clear()
            if self._closing.is_set():
                return
            # Full jitter keeps a fleet of daemons from reconnecting in step after a broker restart.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                    await self._closing.wait()
            delay = min(delay * 2, self.config.reconnect_max_seconds)

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        qos = self.config.qos
        await self._check_anonymous()
        await client.subscribe(self.topics.command, qos=qos)
        if self.meter is not None:
            await client.subscribe(self.meter.topic, qos=qos)
        # Online only once subscribed: a command sent on seeing "online" must not be lost.
        await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        if self.config.homeassistant.enabled:
            node = f"wattshift_{self.site_name}".replace("-", "_").replace(".", "_")
            for topic, config in discovery_configs(self.topics, self.config.homeassistant.prefix, self.site_name,
                                                   node).items():
                await client.publish(topic, _json(config), qos=qos, retain=True)
        # The broker may have lost our retained state (restarted without persistence): say it all again.
        self.outbox.forget_sent()
        self._state_dirty = self._report is not None
        self.connections += 1
        self.connected.set()
        self._wake.set()
        log.info("mqtt: connected to %s:%d as %s", self.config.host, self.config.broker_port(),
                 self.config.identifier(self.site_name))

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._serving = True
        tasks = [asyncio.create_task(self._receive(client)), asyncio.create_task(self._publish(client)),
                 asyncio.create_task(self._closing.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._serving = False
            self._wake.set()
            for task in tasks:
                task.cancel()
                task.add_done_callback(_retrieve)
            # Python 3.11's asyncio.wait_for (inside aiomqtt's publish) can swallow a cancellation
            # that lands as its wait completes. A task that missed it still ends: the publisher at
            # the top of its loop, the receiver when the connection closes. Never wait for ever.
            await asyncio.wait(tasks, timeout=1.0)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if message.topic.matches(self.topics.command):
                try:
                    await self.on_command(payload, message.properties, retained=bool(message.retain))
                except Exception:  # a bug must cost one command, never the link (it did: 47 reconnects)
                    log.exception("mqtt: a command message could not be handled")
            elif self.meter is not None and message.topic.matches(self.meter.topic):
                self.meter.feed(payload)
            self._wake.set()

    async def _publish(self, client: aiomqtt.Client) -> None:
        while self._serving:
            self._wake.clear()  # before publishing: a record that arrives meanwhile wakes us again
            wait = await self._publish_some(client)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation
            # that ends this task when the event is set at the same moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _publish_some(self, client: aiomqtt.Client) -> float | None:
        self._render_state()
        return await self.outbox.send(client, qos=self.config.qos, retain=self.config.retain)

    async def _flush(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(CALL_TIMEOUT_SECONDS / 2):
                await self._publish_some(client)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's exception as seen (it was dealt with, or the connection is gone)."""
    if not task.cancelled():
        task.exception()


def _echo(value: Any) -> Any:
    """A refused value for the reply: as sent when it is short, else its first 100 characters
    (a string stays a string)."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:97] + "..."
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return show(value)
    return value if len(text) <= 200 else show(value)
