"""GPUs on other hosts, through the ``wattshift agent`` on each, over the site's MQTT broker.

The broker side is :class:`~wattshift.drivers.agent_link.AgentLink` (:mod:`.agent_link`): one
connection for every agent host, which refuses hostile, skewed and replayed messages and keeps
the latest good reading per host. :class:`AgentGpus` is one host's cards seen through the link;
it implements :class:`~wattshift.drivers.gpu.GpuDriver`, so the loop drives a remote node
exactly as a local one, with the same guarantees:

- **Unknown means worst case.** A host whose agent said ``offline`` (its last will), or whose
  last good reading is older than ``stale_after_seconds`` (on the controller's clock, from when
  it arrived), or any host while the broker lets anonymous clients in (the link's
  ``untrusted``), reads as every card ``Failure.NO_ANSWER``: the node counts at its maximum.
- **Confirmed by a fresh reading.** ``set_power_limit`` sends a cap with a fresh id, waits for
  the agent's reply (the agent's own read-back), then for a reading the agent took after that
  reply and that arrived after it: only that reading's limit confirms the cap. An agent that
  says OK and keeps its old cap is ``Failure.IGNORED``; no fresh reading in time is
  ``Failure.TIMEOUT``. Either way the loop distrusts the node and counts it at its maximum.

:class:`AgentJobs` is the site's job runner when the hosts run their own jobs (the agent's
``jobs:``): it reads the jobs from each host's fresh readings and moves them through that host's
agent. A host whose runner could not be asked reads as unknown, so its node counts at its maximum.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from wattshift.model.gpu import GpuReading
from wattshift.model.miner import Failure

from .agent_link import AgentLink
from .agent_wire import PROTOCOL, CapCommand, JobAction, JobCommand, card_in
from .base import DeviceError
from .jobs import DEFAULT_ACTION_TIMES, ActionTimes, JobError, JobSpec, JobStatus

CAP_SLACK_WATTS = 1.0  # as the NVML driver: a card keeps its limit at its own granularity


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
